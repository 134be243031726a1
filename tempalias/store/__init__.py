"""The store: the only package that talks to Redis.

- ``keys.py``: the key schema, the one place a key is spelled (tests and the benchmark import it).
- ``runner.py``: the script runner: EVALSHA, NOSCRIPT then load once, a script's refusal as a
  domain exception, connection trouble as ``StoreUnavailable``, each operation within its budget.
- ``connections.py``: which deployment a URL names (one Redis, Sentinel, Cluster), its bounded
  redis-py client, the direct paths the runner sends on (per node and slot in a Cluster), and
  ``Durability``: the replicas a write waits for.
- ``aliases.py``: ``AliasStore``: create, read, reserve/commit/release, revoke, purge, and the
  reverse addresses of an alias that takes replies.
- ``retired.py``: ``RetiredIds``: every id ever handed out at the operator's domains, in a
  Bloom-style bit set, so that none is handed out twice and none keeps a key of its own.
- ``migration.py``: ``Migration``: an older tempalias's keys brought to this schema, once.
- ``domains.py``: ``DomainStore``: custom domains registered, activated, read, checked, erased.
- ``ratelimits.py``: ``RateLimiter``: token buckets and connection leases (tempalias/abuse.py).
- ``health.py``: ``server_settings``: the read-only ``CONFIG GET`` of ``tempalias check``.
- ``stats.py``: ``StatsStore``: the counts of ``tempalias stats``, added in batches by every
  process to hourly hashes, and the last days of the aliases created.
- ``errors.py``: what the store raises.
"""

from tempalias.store.aliases import (ID_ALPHABET, MS_PER_DAY, REPLY_LIMIT, RESERVED_IDS, Alias,
                                     AliasStore, NewAlias, ReplyRoute, Reservation,
                                     alias_token_hash, hash_token, new_reservation_id,
                                     normalise_id, random_id)
from tempalias.store.connections import (BadRedisUrl, Durability, NotReplicated, connect,
                                         parse_redis_url)
from tempalias.store.domains import CheckOutcome, Domain, DomainStore, PendingDomain
from tempalias.store.errors import (AliasExhausted, AliasNotFound, AliasRefused, AliasTaken,
                                    DomainNotFound, DomainSuspended, DomainTaken, RateLimited,
                                    StoreError, StoreUnavailable, Throttled, UnknownDomain)
from tempalias.store import keys
from tempalias.store.keys import DOMAINS_KEY, IDLEN_KEY
from tempalias.store.ratelimits import Lease, RateLimiter
from tempalias.store.retired import RetiredIds, Take

__all__ = [
    "ID_ALPHABET", "MS_PER_DAY", "REPLY_LIMIT", "RESERVED_IDS", "Alias", "AliasStore", "NewAlias",
    "ReplyRoute", "Reservation",
    "alias_token_hash", "hash_token", "new_reservation_id", "normalise_id", "random_id",
    "BadRedisUrl", "Durability", "NotReplicated", "connect", "parse_redis_url", "CheckOutcome",
    "Domain",
    "DomainStore", "PendingDomain", "AliasExhausted", "AliasNotFound", "AliasRefused",
    "AliasTaken", "DomainNotFound", "DomainSuspended", "DomainTaken", "RateLimited", "StoreError",
    "StoreUnavailable", "Throttled", "UnknownDomain", "DOMAINS_KEY", "IDLEN_KEY",
    "Lease", "RateLimiter", "RetiredIds", "Take", "keys",
]
