"""The abuse defences at the SMTP door, end to end: a real tempalias child, a real DNS block list
server, a real sink as smarthost, and clients connecting from other loopback addresses (127.0.0.1
is a trusted network by default). Whatever a list or a limit refused must never reach the sink.
A limit recovers when the test lets time pass in Redis (conftest's ``let_time_pass``), never by
waiting: the limits are realistic, so the seconds the test really takes never refill a bucket.
"""

from __future__ import annotations

import collections
import secrets
import smtplib
import socket
import threading

import pytest

from redis import Redis

from harness.processes import wait_for
from tempalias.abuse import RATE_LIMITED, Refusal
from tempalias.embedded_redis import RedisServer, free_loopback_port
from tempalias.smtp.refusals import refusal_reply
from tempalias.store import AliasNotFound, AliasStore, connect, keys

DAY_MS = 86_400_000
CONNECTION_EVERY = 3600 // 3  # s: TEMPALIAS_SMTP_CONNECTIONS_PER_IP is 3/1h below
NOT_YET = 5  # s before a refill: more than the test itself takes, so still refused
BODY = b"Subject: hi\r\n\r\nhello\r\n"


def greeting(port: int, source: str) -> tuple[int, str, bool]:
    """Connect from ``source``; return the greeting's code and text, and whether the server
    closed the connection right after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0)) as sock:
        reader = sock.makefile("rb")
        line = reader.readline().decode()
        closed = reader.read(1) == b"" if not line.startswith("220") else False
        reader.close()
    return int(line[:3]), line[4:].strip(), closed


def connection_rate_refusal(port: int, source: str) -> int:
    """Connect from ``source``, expecting the connection rate's 421 and the connection closed:
    the seconds that reply says to wait."""
    code, text, closed = greeting(port, source)
    assert code == 421 and closed, text
    for retry in range(1, CONNECTION_EVERY + 1):
        reply = refusal_reply(Refusal(RATE_LIMITED, "smtp-connect", source, retry), at_connect=True)
        if text == f"{reply.status} {reply.text}":
            return retry
    pytest.fail(f"not the connection rate's refusal: {code} {text}")


def client(port: int, source: str) -> smtplib.SMTP:
    smtp = smtplib.SMTP(timeout=15, source_address=(source, 0))
    smtp.connect("127.0.0.1", port)
    smtp.ehlo("client.example")
    return smtp


@pytest.fixture(scope="module")
def guarded(service_factory, smtp_sink_server, dns_server):
    return service_factory(env={
        "TEMPALIAS_SMARTHOST": smtp_sink_server.address,
        "TEMPALIAS_RBL_ZONES": "bl.test",
        "TEMPALIAS_DNS_SERVERS": dns_server.address,
        "TEMPALIAS_SMTP_CONNECTIONS_PER_IP": "3/1h",
        "TEMPALIAS_SMTP_CONCURRENT_PER_IP": "2",
        "TEMPALIAS_SMTP_MESSAGES_PER_IP": "2/1h",
        "TEMPALIAS_ALIAS_MESSAGE_RATE": "1/1h",
    })


def test_listed_client_is_refused_at_connect_and_nothing_is_relayed(guarded, smtp_sink):
    code, text, closed = greeting(guarded.smtp_port, "127.0.0.2")  # listed in bl.test
    assert code == 554 and text == "5.7.1 127.0.0.2 listed in bl.test"
    assert closed
    assert smtp_sink.connections == 0


def test_the_log_names_the_refused_smtp_client_and_its_list(guarded):
    assert greeting(guarded.smtp_port, "127.0.0.2")[0] == 554
    assert "127.0.0.2" in guarded.log_text() and "bl.test" in guarded.log_text()


def test_unlisted_client_gets_mail_through(guarded, smtp_sink, store):
    alias = store.create("owner@example.org", DAY_MS, 5)
    with client(guarded.smtp_port, "127.0.0.3") as smtp:
        smtp.sendmail("a@sender.example", [f"{alias.alias.id}@tempalias.test"], BODY)
    assert len(smtp_sink.messages) == 1


def test_connection_rate_per_ip_is_421_and_recovers(guarded, smtp_sink, let_time_pass):
    source = "127.0.0.4"
    codes = [greeting(guarded.smtp_port, source)[0] for _ in range(3)]
    assert codes == [220, 220, 220]
    wait = connection_rate_refusal(guarded.smtp_port, source)
    assert CONNECTION_EVERY - NOT_YET < wait <= CONNECTION_EVERY
    assert greeting(guarded.smtp_port, "127.0.0.44")[0] == 220  # other clients are unaffected
    let_time_pass(wait - NOT_YET)
    assert connection_rate_refusal(guarded.smtp_port, source) <= NOT_YET  # not yet
    let_time_pass(NOT_YET)
    assert greeting(guarded.smtp_port, source)[0] == 220
    assert connection_rate_refusal(guarded.smtp_port, source)  # one came back, no more


def test_open_connections_per_ip_are_bounded(guarded, smtp_sink):
    source = "127.0.0.5"
    first, second = client(guarded.smtp_port, source), client(guarded.smtp_port, source)
    try:
        code, text, closed = greeting(guarded.smtp_port, source)
        assert code == 421 and "open connections" in text and closed
    finally:
        first.quit()
    # a slot is free again once a connection ended
    wait_for(lambda: greeting(guarded.smtp_port, source)[0] == 220, 15, "a free connection slot")
    second.quit()


def test_messages_per_ip_are_451_at_mail_from(guarded, smtp_sink, store):
    # one alias per message, so that the per-alias limit (1/1h) is not what refuses
    addresses = [f"{store.create('owner@example.org', DAY_MS, None).alias.id}@tempalias.test"
                 for _ in range(2)]
    with client(guarded.smtp_port, "127.0.0.6") as smtp:
        for address in addresses:
            smtp.sendmail("a@sender.example", [address], BODY)
        code, text = smtp.mail("a@sender.example")
    assert code == 451 and text.decode().startswith("4.7.1")
    assert len(smtp_sink.messages) == 2


def test_transactions_whose_recipients_were_refused_count_too(guarded, smtp_sink):
    """A guesser who only ever gets refusals still spends the per-IP message budget."""
    with client(guarded.smtp_port, "127.0.0.9") as smtp:
        for guess in range(2):
            assert smtp.mail("")[0] == 250
            assert smtp.rcpt(f"SRS0=guess{guess:05d}=AA=zz=victim.example=bob@tempalias.test")[0] == 550
            assert smtp.rset()[0] == 250
        code, text = smtp.mail("")
    assert code == 451 and text.decode().startswith("4.7.1")
    assert smtp_sink.connections == 0


def test_messages_per_alias_are_451_at_rcpt_and_keep_the_use(guarded, smtp_sink, store):
    alias = store.create("owner@example.org", DAY_MS, 5)
    address = f"{alias.alias.id}@tempalias.test"
    with client(guarded.smtp_port, "127.0.0.7") as smtp:
        smtp.sendmail("a@sender.example", [address], BODY)
    with client(guarded.smtp_port, "127.0.0.8") as smtp:
        smtp.mail("b@sender.example")
        code, text = smtp.rcpt(address)
    assert code == 451 and text.decode().startswith("4.7.1")
    assert len(smtp_sink.messages) == 1
    assert store.lookup(alias.alias.id).uses_left == 4  # the refused attempt took no use
    assert not store.redis.zcard(keys.held_key(alias.alias.id))


def test_trusted_network_is_never_limited(guarded, smtp_sink, store):
    alias = store.create("owner@example.org", DAY_MS, None)
    address = f"{alias.alias.id}@tempalias.test"
    for _ in range(5):  # over every limit above, from 127.0.0.1
        with client(guarded.smtp_port, "127.0.0.1") as smtp:
            smtp.sendmail("a@sender.example", [address], BODY)
    assert len(smtp_sink.messages) == 5
    try:
        assert store.lookup(alias.alias.id).delivered == 5
    except AliasNotFound:  # pragma: no cover - an unlimited alias cannot run out
        pytest.fail("the alias vanished")


# --- what the defences cost: Redis round trips per message (issue 12)


def service_traffic(probe, action, leases_of: str | None = None) -> tuple[int, collections.Counter]:
    """Run ``action`` and, with ``leases_of``, wait until that client's leases are all given back:
    the round trips the service made to Redis meanwhile (the writes Redis read from its clients,
    ``total_reads_processed``, less the probe's own) and the commands it sent, by name (MONITOR;
    not those a script ran)."""
    marker = secrets.token_hex(8)
    sent: collections.Counter = collections.Counter()
    watching = threading.Event()

    def watch():
        with probe.monitor() as monitor:
            watching.set()
            for command in monitor.listen():
                if command["command"] == f"ECHO {marker}":
                    return
                if command["client_type"] != "lua" and command["client_port"] not in ours:
                    sent[command["command"].split(" ", 1)[0].lower()] += 1

    def reads() -> int:
        return probe.info("stats")["total_reads_processed"]

    polls = 0

    def given_back() -> bool:
        nonlocal polls
        polls += 1
        return probe.zcard(keys.lease_key(f"ip:{leases_of}")) == 0

    ours = {client["addr"].rsplit(":", 1)[1] for client in probe.client_list()
            if client["name"] == PROBE}
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert watching.wait(10)
    before = reads()
    action()
    if leases_of is not None:
        wait_for(given_back, 15, "the connections' leases to be given back")
    round_trips = reads() - before - polls - 1  # each poll is one, and so is the last INFO
    probe.echo(marker)
    watcher.join(10)
    assert not watcher.is_alive()
    return round_trips, sent


PROBE = "test-probe"


@pytest.fixture(scope="module")
def counted(service_factory, smtp_sink_server, tmp_path_factory):
    """A service with the default limits, alone on a redis-server of its own, and a probe that
    names itself there: every other client is the service."""
    redis = RedisServer(str(tmp_path_factory.mktemp("counted-redis")), port=free_loopback_port(),
                        persistent=False)
    redis.start()
    service = service_factory(env={"TEMPALIAS_REDIS_URL": redis.url,
                                   "TEMPALIAS_SMARTHOST": smtp_sink_server.address})
    probe = Redis.from_url(redis.url, decode_responses=True, client_name=PROBE,
                           single_connection_client=True)
    store = AliasStore(connect(redis.url, timeout=5.0))
    yield service, store, probe
    service.stop()
    store.close()
    probe.close()
    redis.stop()


def test_an_untrusted_message_costs_three_round_trips_and_its_slot_one_after_it_left(
        counted, smtp_sink):
    """Connection per message: one script at connect (connection rate, open connections, the
    message's token paid in advance), one at RCPT (the use and the alias's limit), one when the
    smarthost took the message; once the connection is closed its slot goes back (alone here: no
    other connection closes or comes meanwhile). A trusted client costs the two in the middle.
    Before issue 12 this was seven."""
    service, store, probe = counted
    address = f"{store.create('owner@example.org', DAY_MS, None).alias.id}@tempalias.test"

    def one_message(source):
        def send():
            with client(service.smtp_port, source) as smtp:
                smtp.sendmail("a@sender.example", [address], BODY)
        return service_traffic(probe, send, leases_of=source)

    one_message("127.0.0.2")  # the scripts are loaded once, here
    assert one_message("127.0.0.2") == (4, {"evalsha": 4})
    assert one_message("127.0.0.1") == (2, {"evalsha": 2})
    assert len(smtp_sink.messages) == 3


def test_a_message_on_a_kept_connection_costs_three_round_trips(counted, smtp_sink):
    """On a kept connection the message's token is taken at MAIL FROM, as before."""
    service, store, probe = counted
    address = f"{store.create('owner@example.org', DAY_MS, None).alias.id}@tempalias.test"
    with client(service.smtp_port, "127.0.0.3") as smtp:
        for _ in range(2):  # the first is paid at connect; the second loads MAIL's script
            smtp.sendmail("a@sender.example", [address], BODY)
        # the message is counted in Redis before its 250: nothing to wait for
        traffic = service_traffic(probe, lambda: smtp.sendmail("a@sender.example", [address], BODY))
    assert traffic == (3, {"evalsha": 3})


def test_connections_that_close_together_give_back_their_slots_together(counted):
    """What closed connections held goes back to Redis together (within LEAVING_BATCH_SECONDS of
    the first): under load, a fraction of a round trip per connection rather than one each."""
    service, store, probe = counted
    source = "127.0.0.4"

    def open_and_close(count):
        connections = [client(service.smtp_port, source) for _ in range(count)]
        assert probe.zcard(keys.lease_key(f"ip:{source}")) == count
        return service_traffic(probe, lambda: [smtp.close() for smtp in connections],
                               leases_of=source)

    open_and_close(1)  # the script is loaded once, here
    round_trips, sent = open_and_close(5)
    assert round_trips < 5 and sent["evalsha"] < 5
