"""The service sweeps ended aliases out of Redis, and checks custom domains that are due, by
itself, with no cron job needed."""

from __future__ import annotations

import secrets
import time

from harness.processes import wait_for
from tempalias.store import DOMAINS_KEY, DomainStore, hash_token, keys


def test_running_service_sweeps_ended_aliases_by_itself(service_factory, store, redis_client):
    service = service_factory(env={"TEMPALIAS_PURGE_INTERVAL": "0.2"})
    ended = store.create("a@example.org", 1, None).alias.id
    live = store.create("b@example.org", 3_600_000, None).alias.id
    wait_for(lambda: redis_client.zscore(keys.ends_key(ended), ended) is None, 15,
             "the service's janitor to sweep the ended alias")
    assert set(redis_client.scan_iter(match=keys.alias_pattern(ended))) == set()
    assert redis_client.exists(keys.alias_key(live)) == 1
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
