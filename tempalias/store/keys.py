"""The key schema: the only place a Redis key of tempalias is spelled.

Every key of one alias shares the hash tag ``{id}``, so each script that works on an alias touches
one Redis Cluster slot:

- ``ta:{id}:id``     the id's reservation, ``SET NX`` once and never deleted: ids are never reused.
- ``ta:{id}:alias``  hash: target, token (SHA-256 of the management token), created, expires
                     (epoch ms), delivered, and uses (left) when the alias is limited by count.
                     Its Redis TTL is the alias's lifetime, so expiry erases it by itself.
- ``ta:{id}:held``   sorted set of in-flight delivery reservations, scored by the moment they
                     lapse, so a reservation whose holder died frees its use by itself.
- ``ta:rl:{id}:NAME`` the alias's rate-limit buckets (``alias-message``): hash tag ``{id}`` too,
                     so the delivery script takes their tokens in the same slot; like every bucket
                     they expire by themselves, and hold a moment in time, nothing of the alias.

Keys of the whole service:

- ``ta:idlen``       the current id length; it only grows.
- ``ta:ends``        sorted set id -> expiry (ms): lets ``purge`` reach exactly the aliases whose
                     time is up, at a cost proportional to their number (no KEYS, no SCAN).
- ``ta:srs:{hash}``  how many delivery reports an SRS return address carried; expires with it.
- ``ta:rl:{SUBJECT}:NAME`` a rate-limit bucket: SUBJECT is what is limited (``ip:192.0.2.7``,
                     ``net:2001:db8:1:2::/64``, ``to:<sha256 of the target>``, or an alias id) and
                     the key's hash tag, NAME the limit (``smtp-connect``...); ``ta:rl:{SUBJECT}:open``
                     is the sorted set of the subject's open SMTP connections (lease id -> lapse).
"""

from __future__ import annotations

IDLEN_KEY = "ta:idlen"
ENDS_KEY = "ta:ends"
LEASES = "open"  # the limit name of a subject's open connections (its lease set)


def id_key(alias_id: str) -> str:
    return f"ta:{{{alias_id}}}:id"


def alias_key(alias_id: str) -> str:
    return f"ta:{{{alias_id}}}:alias"


def held_key(alias_id: str) -> str:
    return f"ta:{{{alias_id}}}:held"


def alias_pattern(alias_id: str) -> str:
    """A SCAN pattern for every key of one alias (its buckets are the subject's, see above)."""
    return f"ta:{{{alias_id}}}:*"


def report_key(return_hash: str) -> str:
    return f"ta:srs:{{{return_hash}}}"


def limit_key(subject: str, limit: str) -> str:
    return f"ta:rl:{{{subject}}}:{limit}"


def alias_limit_key(alias_id: str, limit: str) -> str:
    """A bucket of one alias: its id is the subject, so the key shares the alias's slot."""
    return limit_key(alias_id, limit)


def lease_key(subject: str) -> str:
    return limit_key(subject, LEASES)


def limit_pattern(subject: str) -> str:
    """A SCAN pattern for every bucket and lease set of one subject."""
    return f"ta:rl:{{{subject}}}:*"


def limit_name(key: str) -> str:
    """The limit a bucket key (``limit_key``) counts: names never contain a colon."""
    return key.rsplit(":", 1)[1]
