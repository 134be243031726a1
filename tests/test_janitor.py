"""The service sweeps ended aliases out of Redis, and checks custom domains that are due, by
itself, with no cron job needed; and migrates an older version's keys if serve could not."""

from __future__ import annotations

import secrets
import time

from harness.processes import wait_for
from tempalias.embedded_redis import free_loopback_port
from tempalias.janitor import Janitor
from tempalias.store import DOMAINS_KEY, AliasStore, DomainStore, connect, hash_token, keys
from test_migration import write_schema_1_alias


def test_running_service_sweeps_ended_aliases_by_itself(service_factory, store, redis_client):
    """An ended alias of a custom domain leaves its domain's list, and its keys go, with no
    command run: the janitor's purge (one at our domains goes by its own expiry)."""
    service = service_factory(env={"TEMPALIAS_PURGE_INTERVAL": "0.2"})
    domains = DomainStore(redis_client, runner=store.runner)
    now = int(time.time() * 1000)
    domain = f"sweep{secrets.token_hex(4)}.example.org"
    domains.register(domain, hash_token("owner"), now)
    domains.activate(domain, hash_token("owner"), "tempalias-verify=x", now)
    ended = store.create("a@example.org", 1, None, domain=domain, custom=True).alias.id
    live = store.create("b@example.org", 3_600_000, None, domain=domain, custom=True).alias.id
    listed = keys.domain_aliases_key(domain)
    wait_for(lambda: redis_client.zscore(listed, keys.split_id(ended)[0]) is None, 15,
             "the service's janitor to sweep the ended alias")
    assert redis_client.exists(keys.alias_key(ended)) == 0
    assert redis_client.exists(keys.alias_key(live)) == 1
    assert redis_client.zscore(listed, keys.split_id(live)[0]) is not None
    service.stop()  # no sweeping behind the back of later tests


def test_running_service_checks_custom_domains_when_they_are_due(service_factory, dns_zone,
                                                                 redis_client, store):
    service = service_factory(env={"TEMPALIAS_PURGE_INTERVAL": "0.2",
                                   "TEMPALIAS_DNS_SERVERS": dns_zone.address,
                                   "TEMPALIAS_DNS_TIMEOUT": "2"})
    domains = DomainStore(redis_client, runner=store.runner)
    now = int(time.time() * 1000)
    due, later = (f"{which}{secrets.token_hex(4)}.example.org" for which in ("due", "later"))
    for domain in (due, later):  # verified once; their records are gone since
        domains.register(domain, hash_token("owner"), now)
        domains.activate(domain, hash_token("owner"), "tempalias-verify=x", now)
    redis_client.zadd(DOMAINS_KEY, {due: now - 1000}, xx=True)  # its day is up
    wait_for(lambda: redis_client.hget(keys.domain_key(due), "status") == "suspended", 15,
             "the janitor to check the domain that is due and suspend it")
    assert redis_client.hget(keys.domain_key(later), "status") == "active"
    assert dns_zone.queries[later] == 0
    service.stop()


def test_the_janitor_migrates_what_serve_could_not(own_redis):
    """Redis did not answer as ``serve`` started: each round tries the migration until it ran."""
    down = AliasStore(connect(f"redis://127.0.0.1:{free_loopback_port()}/0", timeout=0.5))
    try:
        Janitor(down, 3600).migrate()  # put off, and said so in the log: no exception
    finally:
        down.close()
    write_schema_1_alias(own_redis, "oldjan", "old token", int(time.time() * 1000) + 3_600_000)
    store = AliasStore(own_redis)
    janitor = Janitor(store, 3600)
    janitor.migrate()
    assert own_redis.get(keys.SCHEMA_KEY) == "2"
    assert store.get("oldjan", "old token").target == "oldjan@example.org"
    own_redis.delete(keys.SCHEMA_KEY)
    janitor.migrate()  # it ran: the janitor asks no more
    assert own_redis.get(keys.SCHEMA_KEY) is None
