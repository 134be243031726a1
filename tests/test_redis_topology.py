"""The Sentinel and Cluster harness does what the failover tests take for granted.

A failover test that fails should be about the store, not about a deployment that was not formed,
a promotion that the harness mistook for done, or a write that had not reached the replica that
was promoted. So these prove it with plain redis-py clients: a write acknowledged by the replicas
(WAIT) survives a kill -9 of its primary, the new primary is the one the harness names, and no
redis-server is left behind, by a stop or by the death of the process that started them.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from harness.processes import PROJECT_ROOT, Child, wait_for
from harness.redis_topology import ClusterSet, SentinelSet

PROMOTION_LIMIT = 20.0  # seconds from the kill: what the failover tests can afford to wait
CLIENT_TIMEOUT = 2.0


def still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are still processes (a zombie is dead, only not yet reaped)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_sentinels_promote_a_replica_that_has_the_acknowledged_write(tmp_path):
    deployment = SentinelSet(tmp_path)
    with deployment:
        sentinel = Sentinel([("127.0.0.1", node.port) for node in deployment.sentinels],
                            socket_timeout=CLIENT_TIMEOUT)
        primary = sentinel.master_for(deployment.service, socket_timeout=CLIENT_TIMEOUT)
        primary.set("survivor", "acknowledged")
        assert primary.wait(2, 5000) == 2
        assert [replica.ask(lambda client: client.get("survivor"))
                for replica in deployment.replicas] == ["acknowledged"] * 2

        killed = deployment.kill_primary()
        killed_at = time.monotonic()
        promoted = deployment.wait_promoted(killed, timeout=PROMOTION_LIMIT)
        print(f"promoted {time.monotonic() - killed_at:.1f} s after the kill")

        assert promoted != killed
        assert deployment.primary_port() == promoted
        assert deployment.node_at(promoted).ask(lambda client: client.get("survivor")) \
            == "acknowledged"
        assert primary.get("survivor") == b"acknowledged"  # the Sentinel client found it too
        pids = deployment.pids()
        assert len(still_running(pids)) == len(pids) - 1  # only the killed primary is gone
    assert still_running(pids) == []
    deployment.stop()  # again: nothing to do


def test_the_cluster_fails_over_a_killed_primary_with_its_acknowledged_write(tmp_path):
    deployment = ClusterSet(tmp_path)
    with deployment:
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port)
                                             for node in deployment.nodes],
                              socket_timeout=CLIENT_TIMEOUT, decode_responses=True)
        keys = [f"key-{number}" for number in range(200)]
        for key in keys:
            client.set(key, key.upper())
        assert [client.get(key) for key in keys] == [key.upper() for key in keys]
        assert {deployment.port_serving_slot(client.keyslot(key)) for key in keys} \
            == set(deployment.primary_ports())  # every primary had its share

        victim = deployment.port_serving_slot(client.keyslot("survivor"))
        with redis.Redis("127.0.0.1", victim, socket_timeout=CLIENT_TIMEOUT) as direct:
            direct.set("survivor", "acknowledged")
            assert direct.wait(1, 5000) == 1
        deployment.kill(victim)
        killed_at = time.monotonic()
        taker = deployment.wait_failed_over(victim, timeout=PROMOTION_LIMIT)
        print(f"failed over {time.monotonic() - killed_at:.1f} s after the kill")

        assert taker != victim
        assert deployment.port_serving_slot(client.keyslot("survivor")) == taker
        assert client.get("survivor") == "acknowledged"
        for key in keys:  # every slot served again, the killed primary's included
            client.set(key, "again")
        assert {client.get(key) for key in keys} == {"again"}
        client.close()
        pids = deployment.pids()
    assert still_running(pids) == []


def test_a_password_is_asked_of_clients_and_given_to_replicas_and_sentinels(tmp_path):
    with SentinelSet(tmp_path, replicas=1, sentinels=1, password="s3cret") as deployment:
        assert deployment.url.startswith("redis+sentinel://:s3cret@127.0.0.1:")
        port = deployment.primary_port()
        # Once: redis-py retries a refused password (a ConnectionError) for seconds by default.
        with redis.Redis("127.0.0.1", port, socket_timeout=CLIENT_TIMEOUT,
                         retry=Retry(NoBackoff(), 0)) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.get("anything")
        sentinel = Sentinel([("127.0.0.1", deployment.sentinels[0].port)],
                            socket_timeout=CLIENT_TIMEOUT)
        primary = sentinel.master_for(deployment.service, password="s3cret",
                                      socket_timeout=CLIENT_TIMEOUT)
        primary.set("key", "value")
        assert primary.wait(1, 5000) == 1  # the replica authenticated to its primary


# A process that starts a deployment, says its pids and waits to be killed.
ORPHANING = """
import json, sys, threading
from pathlib import Path
from harness.redis_topology import SentinelSet
deployment = SentinelSet(Path(sys.argv[1]), replicas=1, sentinels=1).start()
Path(sys.argv[2]).write_text(json.dumps(deployment.pids()))
threading.Event().wait()
"""


def test_nothing_outlives_the_process_that_started_it(tmp_path):
    ready = tmp_path / "pids.json"
    parent = Child("parent", [sys.executable, "-c", ORPHANING, str(tmp_path / "set"), str(ready)],
                   tmp_path, env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)), ready_file=ready)
    pids = parent.start()
    assert len(still_running(pids)) == 3
    parent.stop(signal.SIGKILL)  # as the OOM killer would: no stop(), no atexit
    wait_for(lambda: not still_running(pids), 10, "the orphaned redis-servers to exit")
