"""The service sweeps ended aliases out of Redis by itself, with no cron job needed."""

from __future__ import annotations

from harness.processes import wait_for
from tempalias.store import ENDS_KEY


def test_running_service_sweeps_ended_aliases_by_itself(service_factory, store, redis_client):
    service = service_factory(env={"TEMPALIAS_PURGE_INTERVAL": "0.2"})
    ended = store.create("a@example.org", 1, None).alias.id
    live = store.create("b@example.org", 3_600_000, None).alias.id
    wait_for(lambda: redis_client.zscore(ENDS_KEY, ended) is None, 15,
             "the service's janitor to sweep the ended alias")
    assert set(redis_client.scan_iter(match=f"ta:{{{ended}}}:*")) == {f"ta:{{{ended}}}:id"}
    assert redis_client.exists(f"ta:{{{live}}}:alias") == 1
    service.stop()  # no sweeping behind the back of later tests
