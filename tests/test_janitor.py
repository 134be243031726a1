"""The service sweeps ended aliases out of Redis by itself, with no cron job needed."""

from __future__ import annotations

from harness.processes import wait_for
from tempalias.store import ENDS_KEY, keys


def test_running_service_sweeps_ended_aliases_by_itself(service_factory, store, redis_client):
    service = service_factory(env={"TEMPALIAS_PURGE_INTERVAL": "0.2"})
    ended = store.create("a@example.org", 1, None).alias.id
    live = store.create("b@example.org", 3_600_000, None).alias.id
    wait_for(lambda: redis_client.zscore(ENDS_KEY, ended) is None, 15,
             "the service's janitor to sweep the ended alias")
    assert set(redis_client.scan_iter(match=keys.alias_pattern(ended))) == {keys.id_key(ended)}
    assert redis_client.exists(keys.alias_key(live)) == 1
    service.stop()  # no sweeping behind the back of later tests
