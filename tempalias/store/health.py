"""What ``tempalias check`` asks Redis about itself: read-only ``CONFIG GET``, nothing else.

The one path outside the script runner, because what it reads is the server's configuration, not
tempalias's keys: whether it may evict keys (an alias would vanish without a word) and whether it
persists them. On a Cluster every primary is asked, since each holds a share of the aliases.
"""

from __future__ import annotations

import redis

from tempalias.store.connections import connect
from tempalias.store.errors import StoreUnavailable


def server_settings(url: str, timeout: float, names: tuple[str, ...],
                    password: str | None = None) -> list[dict[str, str]] | None:
    """``CONFIG GET`` of ``names`` on each primary of ``url``'s deployment (one dict each), within
    ``timeout`` a wait; None when Redis answers but refuses CONFIG (renamed, ACL). Raises
    StoreUnavailable when it does not answer."""
    client = connect(url, timeout, max_connections=2, password=password)
    try:
        client.ping()
        nodes = ([client.get_redis_connection(node) for node in client.get_primaries()]
                 if isinstance(client, redis.RedisCluster) else [client])
        return [{key: value for name in names for key, value in node.config_get(name).items()}
                for node in nodes]
    except redis.exceptions.ResponseError:
        return None  # CONFIG refused (NOPERM, unknown command): it answered, we cannot read
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        raise StoreUnavailable(f"redis unreachable: {exc}") from None
    finally:
        client.close()
