"""Several tempalias nodes on Redis Sentinel and on Redis Cluster, and a primary killed under load.

Real processes on loopback (harness/redis_topology.py): a Sentinel set (one primary, two
replicas, three sentinels) under two nodes, a Cluster (three primaries, three replicas) under
three. While creations, look-ups and messages run through every node (tests/failover_load.py), a
primary is killed with SIGKILL, as a machine dies. Afterwards: clients saw only 503 and 4xx while
it lasted, never a 5xx nor a 500; each alias answered 201 is still there; each message answered
250 reached the sink exactly once; an alias of N uses carried exactly N messages; and every node
serves again without a restart.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections import Counter

import pytest
import requests

from failover_load import TARGET, FailoverLoad
from harness.processes import wait_for
from harness.redis_topology import ClusterSet, SentinelSet
from tempalias.store import keys

USES = 3
AFTER_PROMOTION = 3.0  # seconds of load once Redis has a primary again
RECOVERY = 15.0  # seconds within which every node must serve again after the promotion
MESSAGE_ID = re.compile(rb"^Message-ID: (<[^>]+>)", re.MULTILINE | re.IGNORECASE)


def _nodes(service_factory, url: str, sink, count: int) -> list:
    env = {"TEMPALIAS_REDIS_URL": url, "TEMPALIAS_SMARTHOST": sink.address,
           "TEMPALIAS_SRS_SECRET": "failover-srs-secret",
           # every node must read the others' SRS addresses and sign with one key
           "TEMPALIAS_REDIS_TIMEOUT": "2", "TEMPALIAS_REDIS_WAIT_TIMEOUT": "0.5"}
    first = service_factory(env=env)
    key = first.workdir / "data" / "dkim.key"
    return [first, *(service_factory(env={**env, "TEMPALIAS_DKIM_KEY": str(key)})
                     for _ in range(count - 1))]


def _serves(node, sink) -> bool:
    """A creation and a message through ``node`` both succeed now."""
    try:
        response = requests.post(f"{node.http_url}/api/v1/aliases", timeout=10,
                                 json={"target": TARGET, "uses": 1})
    except requests.RequestException:
        return False
    if response.status_code != 201:
        return False
    load = FailoverLoad([node])
    code, _, message_id = load.send(response.json()["address"])
    return code == 250


def _delivered_ids(sink) -> Counter:
    return Counter(match.group(1).decode() for message in sink.messages
                   for match in [MESSAGE_ID.search(message.content)] if match)


def _assert_nothing_lost(load: FailoverLoad, sink, nodes) -> None:
    # Only 503 (with Retry-After) and 4xx, never a 500 nor a 5xx that was no used-up alias.
    assert set(load.codes("create")) <= {201, 503}, load.codes("create")
    assert set(load.codes("lookup")) <= {200, 503}, load.codes("lookup")
    assert all(answer.detail for answer in load.answers
               if answer.what != "send" and answer.code == 503 and answer.what == "create")
    sends = load.codes("send")
    assert all(code == 250 or 400 <= code < 500 or code == 550 for code in sends), sends
    # Each alias: exactly USES messages answered 250, then refused as used up (550 5.1.1).
    assert load.stories, "no alias was used up"
    for story in load.stories:
        assert len(story.delivered) == USES, story
        assert story.refusal.startswith("550") and "5.1.1" in story.refusal, story
    # Each message answered 250 is at the sink exactly once.
    delivered = _delivered_ids(sink)
    answered = [message_id for story in load.stories for message_id in story.delivered]
    assert all(delivered[message_id] == 1 for message_id in answered), [
        (message_id, delivered[message_id]) for message_id in answered
        if delivered[message_id] != 1]
    # Each alias answered 201 and not used up is still there, on every node.
    used = {story.address for story in load.stories}
    kept = [made for made in load.created if made["address"] not in used]
    for i, made in enumerate(kept):
        node = nodes[i % len(nodes)]
        response = requests.get(f"{node.http_url}/api/v1/aliases/{made['id']}", timeout=10,
                                headers={"Authorization": f"Bearer {made['token']}"})
        assert response.status_code == 200, (made["id"], response.status_code)


def _report(record_property, load: FailoverLoad, promoted_after: float) -> None:
    figures = {"promoted_after_s": round(promoted_after, 2),
               "trouble_window_s": round(load.trouble_window(), 2),
               "answers": len(load.answers), "troubled": len(load.troubled()),
               "aliases_used_up": len(load.stories), "aliases_created": len(load.created)}
    record_property("failover", figures)
    print("failover:", figures)


@pytest.fixture
def sentinel_set(tmp_path):
    with SentinelSet(tmp_path / "sentinel") as deployment:
        yield deployment


@pytest.fixture
def cluster_set(tmp_path):
    with ClusterSet(tmp_path / "cluster") as deployment:
        yield deployment


def _fail_over_under_load(nodes, sink, kill_primary, record_property) -> None:
    """Load through ``nodes``; ``kill_primary()`` kills one and returns once Redis has promoted
    another; the load goes on for AFTER_PROMOTION s, then every check of the module docstring."""
    pids = [node.pid for node in nodes]
    load = FailoverLoad(nodes, uses=USES).start()
    wait_for(lambda: len(load.stories) >= 2, 30, "load under way")
    killed_at = time.monotonic()
    kill_primary()
    promoted_after = time.monotonic() - killed_at
    time.sleep(AFTER_PROMOTION)  # the load goes on across the switch (a span of traffic, no wait)
    load.stop()
    for node in nodes:
        wait_for(lambda: _serves(node, sink), RECOVERY, "the node serving on the new primary")
    assert [node.pid for node in nodes] == pids and all(node.running() for node in nodes)
    _assert_nothing_lost(load, sink, nodes)
    _report(record_property, load, promoted_after)


def test_two_nodes_on_sentinel_survive_the_primary_dying(sentinel_set, service_factory, own_peer,
                                                         record_property):
    sink = own_peer()
    nodes = _nodes(service_factory, sentinel_set.url, sink, 2)
    _fail_over_under_load(
        nodes, sink, lambda: sentinel_set.wait_promoted(sentinel_set.kill_primary()),
        record_property)


def test_three_nodes_on_a_cluster_share_aliases_purge_and_survive_a_primary_dying(
        cluster_set, service_factory, own_peer, record_property):
    sink = own_peer()
    nodes = _nodes(service_factory, cluster_set.url, sink, 3)
    first, second, third = nodes
    # Made on one node, read on the second, mail through the third.
    made = requests.post(f"{first.http_url}/api/v1/aliases", timeout=10,
                         json={"target": TARGET, "uses": 2}).json()
    shown = requests.get(f"{second.http_url}/api/v1/aliases/{made['id']}", timeout=10,
                         headers={"Authorization": f"Bearer {made['token']}"})
    assert shown.status_code == 200 and shown.json()["target"] == TARGET
    assert FailoverLoad([third]).send(made["address"])[0] == 250
    assert requests.get(f"{first.http_url}/api/v1/aliases/{made['id']}", timeout=10,
                        headers={"Authorization": f"Bearer {made['token']}"}).json()[
        "uses_left"] == 1

    # the primary of that alias's slot dies: its remaining use crosses the failover
    slot_port = cluster_set.port_serving_slot(_slot(keys.alias_key(made["id"])))

    def kill_primary() -> None:
        cluster_set.kill(slot_port)
        cluster_set.wait_failed_over(slot_port)

    _fail_over_under_load(nodes, sink, kill_primary, record_property)
    assert FailoverLoad([second]).send(made["address"])[0] == 250
    assert FailoverLoad([third]).send(made["address"])[0] == 550


def _slot(key: str) -> int:
    from redis.crc import key_slot
    return key_slot(key.encode())


def test_rate_limits_and_the_connection_cap_hold_across_nodes(service_factory, own_peer):
    """Kept in Redis, not in a node: what one node has spent, the other refuses."""
    env = {"TEMPALIAS_TRUSTED_NETWORKS": "", "TEMPALIAS_CREATE_RATE_PER_IP": "2/1h",
           "TEMPALIAS_CREATE_DAILY_PER_IP": "0", "TEMPALIAS_CREATE_DAILY_PER_TARGET": "0",
           "TEMPALIAS_SMTP_CONCURRENT_PER_IP": "1", "TEMPALIAS_RBL_ZONES": "",
           "TEMPALIAS_SMARTHOST": own_peer().address}
    first, second = service_factory(env=env), service_factory(env=env)
    target = f"limits-{time.monotonic_ns()}@failover.example"
    for node in (first, second):
        assert requests.post(f"{node.http_url}/api/v1/aliases", timeout=10,
                             json={"target": target}).status_code == 201
    refused = requests.post(f"{first.http_url}/api/v1/aliases", timeout=10,
                            json={"target": target})
    assert refused.status_code == 429 and refused.headers.get("Retry-After")
    with smtplib.SMTP("127.0.0.1", first.smtp_port, timeout=10) as held:
        held.ehlo()
        with pytest.raises(smtplib.SMTPConnectError) as greeting:
            smtplib.SMTP("127.0.0.1", second.smtp_port, timeout=10)
        assert greeting.value.smtp_code == 421
