"""Custom domains: registered, verified, checked again, suspended and erased; see ``keys.py``.

A domain is registered by anyone who asks, once per domain token: each registration waits, with
its TTL (7 days), for the DNS records that prove it (``tempalias/domaincheck.py`` decides that).
The first registration to be verified makes the domain active with its token and erases the
others, in one script. An active domain is checked again on a schedule (``ta:domains``): records
gone suspend it, records back restore it, and a domain suspended for the whole grace period is
erased with every alias it ever had (their ids too: the domain's next owner starts afresh). Every
key of one domain, its aliases' included, shares the hash tag ``{DOMAIN}``, so each script here
touches one Redis Cluster slot; only the service-wide schedule (``ta:domains``) is kept by
separate commands. A script that reaches keys it found in a set (the
registrations to erase, the aliases of an erased domain) builds them from the templates
``keys.py`` spells.

Times are epoch ms and given by the caller (``now_ms``), so the use cases and the tests decide
the moment, as the alias store's ``clock`` does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable

import redis

from tempalias.store import keys
from tempalias.store.aliases import DUE, MS_PER_DAY
from tempalias.store.errors import DomainNotFound
from tempalias.store.runner import NOW_LUA, Call, Script, ScriptRunner, operation

ACTIVE = "active"
SUSPENDED = "suspended"

# Lua of the scripts that erase keys they find in a set: UNLINK in slices, as unpack's stack has
# room for a few thousand values.
UNLINK_LUA = """
local function unlink_all(found)
    for first = 1, #found, 1000 do
        redis.call('UNLINK', unpack(found, first, math.min(first + 999, #found)))
    end
end
"""

# KEYS[1] - the domain (ta:dom:{DOMAIN})
# KEYS[2] - the registration (ta:dom:{DOMAIN}:pending:TOKENHASH)
# KEYS[3] - the domain's pending registrations (ta:dom:{DOMAIN}:registrations)
# ARGV[1] - TOKENHASH, the SHA-256 hex of the registration's domain token
# ARGV[2] - now, ms
# ARGV[3] - how long a registration waits for its records, ms
# returns 1; error DOMAIN-TAKEN when the domain is active or suspended (nothing is written then)
REGISTER_DOMAIN = Script("""
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.error_reply('DOMAIN-TAKEN')
end
local expires = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'created', ARGV[2])
redis.call('PEXPIREAT', KEYS[2], expires)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
redis.call('ZADD', KEYS[3], expires, ARGV[1])
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[3], last[2])
return 1
""")

# KEYS[1] - the domain (ta:dom:{DOMAIN})
# KEYS[2] - the registration verified (ta:dom:{DOMAIN}:pending:TOKENHASH)
# KEYS[3] - the domain's pending registrations (ta:dom:{DOMAIN}:registrations)
# ARGV[1] - TOKENHASH
# ARGV[2] - the TXT value that verified it
# ARGV[3] - now, ms
# ARGV[4] - prefix and ARGV[5] suffix of a registration's key around its TOKENHASH
# returns 1 when the domain is now active with that token and every registration of it is
#         erased, 0 when it already was active or suspended with that token (nothing changes);
#         error DOMAIN-TAKEN when it is with another token, DOMAIN-UNKNOWN when no such
#         registration waits
ACTIVATE_DOMAIN = Script(UNLINK_LUA + """
local token = redis.call('HGET', KEYS[1], 'token')
if token then
    if token == ARGV[1] then
        return 0
    end
    return redis.error_reply('DOMAIN-TAKEN')
end
local created = redis.call('HGET', KEYS[2], 'created')
if not created then
    return redis.error_reply('DOMAIN-UNKNOWN')
end
redis.call('HSET', KEYS[1], 'status', 'active', 'token', ARGV[1], 'created', created,
           'verified', ARGV[3], 'checked', ARGV[3], 'value', ARGV[2])
local gone = {KEYS[2], KEYS[3]}
for _, other in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    table.insert(gone, ARGV[4] .. other .. ARGV[5])
end
unlink_all(gone)
return 1
""")

# KEYS[1] - the domain (ta:dom:{DOMAIN})
# KEYS[2] - its live aliases (ta:dom:{DOMAIN}:aliases)
# ARGV[1] - SHA-256 hex of the domain token offered, or '' for the operator, who needs none
# ARGV[2] - now, ms, or '' for Redis's clock
# returns {the domain's fields, flat; how many of its aliases have not ended}; error
#         DOMAIN-UNKNOWN when it is neither active nor suspended, or not with that token
READ_DOMAIN = Script(NOW_LUA + """
local token = redis.call('HGET', KEYS[1], 'token')
if not token or (ARGV[1] ~= '' and token ~= ARGV[1]) then
    return redis.error_reply('DOMAIN-UNKNOWN')
end
local live = redis.call('ZCOUNT', KEYS[2], '(' .. now_ms(ARGV[2]), '+inf')
return {redis.call('HGETALL', KEYS[1]), live}
""")

# KEYS[1] - the domain (ta:dom:{DOMAIN})
# ARGV[1] - '1' when its records are in place, '' when they are not
# ARGV[2] - now, ms
# ARGV[3] - the grace period of a suspended domain, ms
# returns {what happened, since when it is suspended (0 when active)}: 'active' (it stays),
#         'restored' (it was suspended), 'suspended' (from now), 'still-suspended', 'grace-over'
#         (suspended for the whole grace period: the caller erases it); error DOMAIN-UNKNOWN
#         when it is neither active nor suspended
MARK_CHECKED = Script("""
local domain = redis.call('HMGET', KEYS[1], 'status', 'suspended')
if not domain[1] then
    return redis.error_reply('DOMAIN-UNKNOWN')
end
local now = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'checked', now)
if ARGV[1] ~= '' then
    if domain[1] == 'active' then
        return {'active', 0}
    end
    redis.call('HSET', KEYS[1], 'status', 'active')
    redis.call('HDEL', KEYS[1], 'suspended')
    return {'restored', 0}
end
if domain[1] == 'active' then
    redis.call('HSET', KEYS[1], 'status', 'suspended', 'suspended', now)
    return {'suspended', now}
end
local since = tonumber(domain[2])
if now - since >= tonumber(ARGV[3]) then
    return {'grace-over', since}
end
return {'still-suspended', since}
""")

# KEYS[1]   - the domain (ta:dom:{DOMAIN})
# KEYS[2]   - its pending registrations (ta:dom:{DOMAIN}:registrations)
# KEYS[3]   - its live aliases (ta:dom:{DOMAIN}:aliases)
# KEYS[4]   - every local part of its life (ta:dom:{DOMAIN}:ids)
# KEYS[5]   - the length of its random local parts (ta:dom:{DOMAIN}:idlen)
# KEYS[6..] - the domain's own buckets (ta:rl:{DOMAIN}:NAME)
# ARGV[1]   - SHA-256 hex of the domain token offered, or '' for the operator and the janitor
# ARGV[2]   - prefix and ARGV[3] suffix of a registration's key around its TOKENHASH
# ARGV[4..] - prefix and suffix, in pairs, of each key of an alias around its local part
# returns {1 when anything of the domain was there, else 0; how many aliases were live (or ended
#         but not yet purged)}; error DOMAIN-UNKNOWN when a token was offered and the domain
#         is neither active nor suspended with it (nothing is erased then)
ERASE_DOMAIN = Script(UNLINK_LUA + """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
    return redis.error_reply('DOMAIN-UNKNOWN')
end
local found = redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[4])
local live = redis.call('ZCARD', KEYS[3])
local locals = redis.call('SMEMBERS', KEYS[4])
local gone = {}
for i = 1, #KEYS do
    table.insert(gone, KEYS[i])
end
for _, registration in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    table.insert(gone, ARGV[2] .. registration .. ARGV[3])
end
for _, loc in ipairs(locals) do
    for i = 4, #ARGV, 2 do
        table.insert(gone, ARGV[i] .. loc .. ARGV[i + 1])
    end
    if #gone >= 1000 then
        unlink_all(gone)
        gone = {}
    end
end
unlink_all(gone)
return {math.min(found, 1), live}
""")

# KEYS[1] - a registration (ta:dom:{DOMAIN}:pending:TOKENHASH)
# KEYS[2] - the domain's pending registrations (ta:dom:{DOMAIN}:registrations)
# ARGV[1] - TOKENHASH
# returns 1 once it is erased; error DOMAIN-UNKNOWN when no such registration waits
WITHDRAW_REGISTRATION = Script("""
if redis.call('UNLINK', KEYS[1]) == 0 then
    return redis.error_reply('DOMAIN-UNKNOWN')
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
""")


# KEYS[1] - the schedule of checks (ta:domains)
# ARGV[1] - DOMAIN
# ARGV[2] - now, ms
# ARGV[3] - how long the claim holds, ms
# returns 1 when the domain's check was due and is now this caller's (its next check moved to
#         now + ARGV[3], in case the caller dies before it says how the check went), else 0
#         (another process claimed or checked it since, or it left the schedule)
CLAIM_CHECK = Script("""
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return 1
""")


class CheckOutcome(str, enum.Enum):
    """What a check of an active or suspended domain's records did (``mark_checked``)."""

    ACTIVE = "active"  # records in place, and it was active
    RESTORED = "restored"  # records back: active again
    SUSPENDED = "suspended"  # records gone: suspended from now
    STILL_SUSPENDED = "still-suspended"  # still gone, within the grace period
    GRACE_OVER = "grace-over"  # gone for the whole grace period: the caller erases it


@dataclass(frozen=True)
class Domain:
    """An active or suspended custom domain (its token's hash stays in the store)."""

    domain: str  # the A-label
    status: str  # ACTIVE or SUSPENDED
    created_ms: int  # when the registration that won was made
    verified_ms: int
    checked_ms: int  # the last check of its records
    suspended_ms: int | None  # since when, while suspended
    value: str  # the TXT value that verified it (checked again on the schedule)
    aliases: int  # how many of its aliases have not ended


@dataclass(frozen=True)
class PendingDomain:
    """A registration waiting for its DNS records."""

    domain: str
    created_ms: int
    expires_ms: int  # erased then unless verified


class DomainStore:
    """Registers, activates, reads, checks and erases custom domains; see ``keys.py``.

    ``recheck_ms``: how long after a check a domain is due again; ``pending_ms``: how long a
    registration waits for its records. ``runner``: the alias store's (``AliasStore.runner``),
    so both share their connections."""

    def __init__(self, client: redis.Redis, runner: ScriptRunner | None = None,
                 recheck_ms: int = MS_PER_DAY, pending_ms: int = 7 * MS_PER_DAY) -> None:
        self.redis = client
        self._own_runner = runner is None
        self.runner = runner or ScriptRunner(client)
        self.recheck_ms = recheck_ms
        self.pending_ms = pending_ms

    # --- registration and verification

    @operation
    def register(self, domain: str, token_hash: str, now_ms: int) -> PendingDomain:
        """A registration of ``domain`` by the holder of the token hashed ``token_hash``; others'
        registrations of it stay. DomainTaken when the domain is active or suspended."""
        self.runner.call(REGISTER_DOMAIN, [keys.domain_key(domain),
                                           keys.pending_key(domain, token_hash),
                                           keys.registrations_key(domain)],
                         [token_hash, now_ms, self.pending_ms], subject=domain)
        return PendingDomain(domain, now_ms, now_ms + self.pending_ms)

    @operation
    def pending(self, domain: str, token_hash: str) -> PendingDomain:
        """The registration of ``domain`` with that token, while it waits; DomainNotFound when
        it never was, lapsed, was withdrawn, or another registration was verified first."""
        [created] = self.runner.send(("HGET", keys.pending_key(domain, token_hash), "created"))
        if created is None:
            raise DomainNotFound(domain)
        return PendingDomain(domain, int(created), int(created) + self.pending_ms)

    @operation
    def activate(self, domain: str, token_hash: str, value: str, now_ms: int) -> bool:
        """Make ``domain`` active with the token of the registration whose records were found
        (``value``: the TXT value found), erasing every other registration of it, and schedule
        its next check. True when it became active now, False when it already was with that
        token (nothing changes). DomainTaken when it is active or suspended with another token,
        DomainNotFound when no such registration waits (lapsed, or another was verified)."""
        prefix, suffix = keys.pending_template(domain)
        became = self.runner.call(ACTIVATE_DOMAIN, [keys.domain_key(domain),
                                                    keys.pending_key(domain, token_hash),
                                                    keys.registrations_key(domain)],
                                  [token_hash, value, now_ms, prefix, suffix], subject=domain)
        if became:
            self.runner.send(("ZADD", keys.DOMAINS_KEY, now_ms + self.recheck_ms, domain))
        return bool(became)

    @operation
    def registrations(self, domain: str, now_ms: int) -> list[str]:
        """The token hashes of ``domain``'s registrations still waiting at ``now_ms``, oldest
        first: for the operator, who verifies a domain without its owner's token."""
        [found] = self.runner.send(("ZRANGEBYSCORE", keys.registrations_key(domain),
                                    f"({now_ms}", "+inf"))
        return list(found)

    @operation
    def withdraw(self, domain: str, token_hash: str) -> None:
        """Erase one waiting registration (its owner gives up); DomainNotFound when none
        waits with that token."""
        self.runner.call(WITHDRAW_REGISTRATION, [keys.pending_key(domain, token_hash),
                                                 keys.registrations_key(domain)],
                         [token_hash], subject=domain)

    # --- reading

    @operation
    def get(self, domain: str, token_hash: str | None, now_ms: int | None = None) -> Domain:
        """The active or suspended ``domain`` if ``token_hash`` is its owner's (None: the
        operator, who needs none); DomainNotFound otherwise, a wrong token as an unknown domain.
        Its alias count is of those that have not ended by ``now_ms`` (None: Redis's clock)."""
        flat, live = self.runner.call(
            READ_DOMAIN, [keys.domain_key(domain), keys.domain_aliases_key(domain)],
            ["" if token_hash is None else token_hash, "" if now_ms is None else now_ms],
            subject=domain)
        fields = dict(zip(flat[::2], flat[1::2]))
        return Domain(
            domain=domain,
            status=fields["status"],
            created_ms=int(fields["created"]),
            verified_ms=int(fields["verified"]),
            checked_ms=int(fields["checked"]),
            suspended_ms=int(fields["suspended"]) if "suspended" in fields else None,
            value=fields["value"],
            aliases=int(live),
        )

    # --- the schedule of checks

    @operation
    def due(self, now_ms: int, limit: int = 100) -> list[str]:
        """The active or suspended domains whose next check has come by ``now_ms``, the most
        overdue first, at most ``limit``."""
        [found] = self.runner.send(Call(DUE, [keys.DOMAINS_KEY], [now_ms, limit]))
        return list(found)

    @operation
    def claim(self, domain: str, now_ms: int, lease_ms: int) -> bool:
        """Take the check of ``domain`` that ``due`` listed, so that of the processes whose
        janitors saw it due at once one alone looks its records up; False when another did
        first. The claim lapses after ``lease_ms`` unless ``mark_checked`` or ``check_later``
        schedules the next check first."""
        return bool(self.runner.call(CLAIM_CHECK, [keys.DOMAINS_KEY],
                                     [domain, now_ms, lease_ms]))

    @operation
    def mark_checked(self, domain: str, ok: bool, now_ms: int, grace_ms: int) -> CheckOutcome:
        """Record a check of ``domain``'s records (``ok``: both in place) and schedule the next:
        ``recheck_ms`` later, or when the grace period of a suspended domain ends if sooner.
        DomainNotFound when it is gone meanwhile (it leaves the schedule too)."""
        try:
            outcome, since = self.runner.call(MARK_CHECKED, [keys.domain_key(domain)],
                                              ["1" if ok else "", now_ms, grace_ms],
                                              subject=domain)
        except DomainNotFound:
            self.runner.send(("ZREM", keys.DOMAINS_KEY, domain))
            raise
        outcome = CheckOutcome(outcome)
        if outcome is not CheckOutcome.GRACE_OVER:
            due = now_ms + self.recheck_ms
            if int(since):
                due = min(due, int(since) + grace_ms)
            self.runner.send(("ZADD", keys.DOMAINS_KEY, "XX", due, domain))
        return outcome

    @operation
    def check_later(self, domain: str, at_ms: int) -> None:
        """Move ``domain``'s next check to ``at_ms`` without recording one: its DNS did not
        answer (a transient failure neither suspends a domain nor restores it)."""
        self.runner.send(("ZADD", keys.DOMAINS_KEY, "XX", at_ms, domain))

    # --- erasure

    @operation
    def erase(self, domain: str, token_hash: str | None = None, limits: Iterable[str] = ()) -> int:
        """Erase ``domain``: its record, every registration of it, every alias it ever had with
        all their keys (ids too: its next owner starts afresh), its buckets named in ``limits``
        (each alias's, ``keys.alias_limit_key``, and the domain's own, ``keys.limit_key(domain,
        NAME)``; buckets of other names lapse by themselves), and its entry in ``ta:domains``.
        Returns how many aliases were live. ``token_hash``: the
        owner's, who may erase only an active or suspended domain that is theirs; None: the
        operator and the janitor. DomainNotFound when nothing of the domain was there, or not with that token.

        One script erases every key of the domain at once (they share its slot), so no
        delivery, creation or verification sees it half erased."""
        names = tuple(limits)
        pending_prefix, pending_suffix = keys.pending_template(domain)
        found, live = self.runner.call(
            ERASE_DOMAIN,
            [keys.domain_key(domain), keys.registrations_key(domain),
             keys.domain_aliases_key(domain), keys.domain_ids_key(domain),
             keys.domain_idlen_key(domain), *(keys.limit_key(domain, name) for name in names)],
            ["" if token_hash is None else token_hash, pending_prefix, pending_suffix,
             *keys.alias_key_templates(domain, names)],
            subject=domain)
        self.runner.send(("ZREM", keys.DOMAINS_KEY, domain))
        if not found:
            raise DomainNotFound(domain)
        return int(live)

    def close(self) -> None:
        if self._own_runner:
            self.runner.close()
