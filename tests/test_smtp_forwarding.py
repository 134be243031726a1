"""The proxy end to end: client -> tempalias (a real child process) -> a real SMTP sink.

Each test creates its own aliases in the session's Redis and checks what a user would notice:
the reply codes, what reached the sink, and how many uses the alias has left.
"""

from __future__ import annotations

import secrets
import smtplib
import socket
import threading
import time

import pytest

from harness.processes import wait_for
from harness.smtp_peer import RawClient
from tempalias.embedded_redis import RedisServer, free_loopback_port
from tempalias.smtp import replies
from tempalias.store import AliasNotFound, AliasStore, DomainStore, connect, hash_token

DAY_MS = 86_400_000
BODY = (b"From: Alice <alice@sender.example>\r\n"
        b"To: someone@tempalias.test\r\n"
        b"Subject: hello\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=x; b=abc\r\n"
        b"\r\n"
        b"First line.\r\n"
        b".A line that starts with a dot.\r\n"
        b".\r\n"
        b"..\r\n"
        b"Trailing spaces   \r\n"
        b"\xc3\xa4\xc3\xb6\xc3\xbc 8-bit text\r\n")


def alias_address(new_alias) -> str:
    return f"{new_alias.alias.id}@tempalias.test"


def uses_left(store, alias_id: str):
    try:
        return store.lookup(alias_id).uses_left
    except AliasNotFound:
        return "gone"


def send(port: int, sender: str, recipients: list[str], body: bytes = BODY,
         mail_options: tuple[str, ...] = ()) -> dict:
    """One transaction with smtplib; returns every reply so tests can assert on each."""
    result: dict = {"rcpt": []}
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example")
        result["mail"] = client.mail(sender, list(mail_options))
        for recipient in recipients:
            result["rcpt"].append(client.rcpt(recipient))
        if any(code == 250 for code, _ in result["rcpt"]):
            result["data"] = client.data(body)
        else:
            result["data"] = None
    return result


def status_of(reply) -> str:
    code, text = reply
    return f"{code} {text.decode().split(' ', 1)[0]}"


def test_message_arrives_unchanged_with_target_and_srs_sender(smtp_service, smtp_sink, store):
    new = store.create("owner@target.example", DAY_MS, 3)
    result = send(smtp_service.smtp_port, "alice@sender.example", [alias_address(new)],
                  mail_options=("BODY=8BITMIME",))
    assert result["data"][0] == 250
    [message] = smtp_sink.messages
    assert message.rcpt_tos == ["owner@target.example"]
    assert message.mail_from.startswith("SRS0=") and message.mail_from.endswith("@tempalias.test")
    assert message.mail_from.split("=", 3)[3] == f"{new.alias.id}=sender.example=alice@tempalias.test"
    assert message.body_after_received() == BODY
    assert message.content.startswith(b"Received: from client.example ([127.0.0.1])\r\n")
    assert uses_left(store, new.alias.id) == 2
    assert message.queue_id.encode() in result["data"][1]


def test_the_log_line_of_a_transaction_names_alias_and_queue_id_but_not_the_target(
        smtp_service, smtp_sink, store):
    target = f"owner{secrets.token_hex(4)}@target.example"
    new = store.create(target, DAY_MS, 3)
    assert send(smtp_service.smtp_port, "alice@sender.example",
                [alias_address(new)])["data"][0] == 250
    [message] = smtp_sink.messages
    log = smtp_service.log_text()
    assert f"aliases={new.alias.id}" in log and f"queue_id={message.queue_id}" in log
    assert target.split("@")[0] not in log


def test_client_gets_250_only_after_the_smarthost_accepted(service_factory, smtp_sink, store):
    # Its own service: the shared one gives up on a silent smarthost after 3 s.
    service = service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink.address})
    new = store.create("owner@target.example", DAY_MS, None)
    smtp_sink.script.hold = True
    with RawClient(service.smtp_port) as client:
        client.reply()
        client.send(b"EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\n"
                    b"RCPT TO:<" + alias_address(new).encode() + b">\r\nDATA\r\n")
        assert [client.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
        client.send(b"Subject: wait\r\n\r\nfor it\r\n.\r\n")
        wait_for(lambda: smtp_sink.state.held, 20, "the sink to hold the message")
        # The sink has the whole message but has not said 250 yet: so nothing has come to us.
        client.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.sock.recv(1, socket.MSG_PEEK)
        client.sock.settimeout(30)
        smtp_sink.release.set()
        assert client.reply()[0] == 250
    assert len(smtp_sink.messages) == 1
    service.stop()


@pytest.mark.parametrize("kind", ["unknown", "foreign", "expired", "exhausted", "revoked",
                                  "malformed"])
def test_refused_recipients_never_reach_the_smarthost(kind, smtp_service, smtp_sink, store):
    if kind == "unknown":
        recipient, expected = "zzzzzzzzzz@tempalias.test", replies.NO_SUCH_ALIAS
    elif kind == "foreign":
        recipient, expected = "someone@elsewhere.example", replies.RELAY_DENIED
    elif kind == "malformed":
        recipient, expected = "not_an-alias!@tempalias.test", replies.NO_SUCH_ALIAS
    else:
        new = store.create("owner@target.example", 200 if kind == "expired" else DAY_MS, 1)
        recipient, expected = alias_address(new), replies.NO_SUCH_ALIAS
        if kind == "expired":
            wait_for(lambda: uses_left(store, new.alias.id) == "gone", 10, "the alias to expire")
        elif kind == "revoked":
            store.revoke(new.alias.id, token=None)
        elif kind == "exhausted":
            assert send(smtp_service.smtp_port, "a@sender.example", [recipient])["data"][0] == 250
            smtp_sink.reset()
    result = send(smtp_service.smtp_port, "alice@sender.example", [recipient])
    assert result["rcpt"][0][0] == expected.code
    assert result["rcpt"][0][1].startswith(expected.status.encode())
    assert smtp_sink.connections == 0


def test_three_uses_thirty_senders(smtp_service, smtp_sink, store):
    new = store.create("owner@target.example", DAY_MS, 3)
    codes: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(30)

    def one() -> None:
        start.wait(10)
        result = send(smtp_service.smtp_port, "alice@sender.example", [alias_address(new)])
        code = result["data"][0] if result["data"] else result["rcpt"][0][0]
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=one) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # The rest learn the alias is gone (550), or, while its last uses were still in flight,
    # to try again later (450): a use that is only held must not bounce anyone for good.
    assert sorted(codes)[:3] == [250] * 3 and set(sorted(codes)[3:]) <= {450, 550}
    assert len(smtp_sink.messages) == 3
    assert uses_left(store, new.alias.id) == "gone"  # the last use erased it


def test_same_alias_twice_is_one_use_and_one_copy(smtp_service, smtp_sink, store):
    new = store.create("owner@target.example", DAY_MS, 2)
    address = alias_address(new)
    result = send(smtp_service.smtp_port, "alice@sender.example", [address, address.upper()])
    assert [code for code, _ in result["rcpt"]] == [250, 250]
    assert result["data"][0] == 250
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["owner@target.example"]]
    assert uses_left(store, new.alias.id) == 1


def test_aliases_that_lead_to_one_target_deliver_once(smtp_service, smtp_sink, store):
    first = store.create("Owner@Target.example", DAY_MS, 2)
    second = store.create("owner@target.example", DAY_MS, 2)
    result = send(smtp_service.smtp_port, "alice@sender.example",
                  [alias_address(first), alias_address(second)])
    assert [code for code, _ in result["rcpt"]] == [250, 250]
    assert result["data"][0] == 250
    [message] = smtp_sink.messages
    assert message.rcpt_tos == ["Owner@Target.example"]
    assert uses_left(store, first.alias.id) == 1  # each alias carried the message
    assert uses_left(store, second.alias.id) == 1


@pytest.fixture(scope="module")
def hasty_service(service_factory, smtp_sink_server):
    return service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink_server.address,
                                "TEMPALIAS_SMTP_TRANSACTION_TIMEOUT": "1"})


def test_a_use_held_in_flight_is_try_later_and_a_holder_loses_it(hasty_service, smtp_sink,
                                                                  store):
    new = store.create("owner@target.example", DAY_MS, 1)
    holder = smtplib.SMTP("127.0.0.1", hasty_service.smtp_port, timeout=30)
    try:
        holder.ehlo("holder.example")
        holder.mail("holder@sender.example")
        assert holder.rcpt(alias_address(new))[0] == 250
        result = send(hasty_service.smtp_port, "bob@sender.example", [alias_address(new)])
        assert status_of(result["rcpt"][0]) == "450 4.2.1"  # try later, not a bounce

        def noop_until_refused():
            """The holder keeps the connection busy and never sends DATA."""
            try:
                code, text = holder.noop()
            except smtplib.SMTPServerDisconnected:
                return "closed without a reply"
            return None if code == 250 else f"{code} {text.decode().split(' ', 1)[0]}"

        assert wait_for(noop_until_refused, 10, "the holder to lose its use") == "421 4.4.2"
    finally:
        holder.close()
    result = send(hasty_service.smtp_port, "bob@sender.example", [alias_address(new)])
    assert result["data"][0] == 250
    assert [m.mail_from.split("=")[-1] for m in smtp_sink.messages] == ["bob@tempalias.test"]


def received_lines(count: int) -> bytes:
    return b"".join(b"Received: from hop%d.example by hop%d.example; Thu, 3 Dec 2026\r\n"
                    % (hop, hop + 1) for hop in range(count))


def test_a_message_past_fifty_hops_is_refused_as_a_loop(smtp_service, smtp_sink, store):
    new = store.create("owner@target.example", DAY_MS, 2)
    result = send(smtp_service.smtp_port, "alice@sender.example", [alias_address(new)],
                  received_lines(300) + BODY)
    assert status_of(result["data"]) == "554 5.4.6"
    assert smtp_sink.messages == [] and uses_left(store, new.alias.id) == 2
    result = send(smtp_service.smtp_port, "alice@sender.example", [alias_address(new)],
                  received_lines(50) + BODY)
    assert result["data"][0] == 250


def test_a_message_that_comes_back_to_its_alias_is_refused_as_a_loop(smtp_service, smtp_sink,
                                                                     store):
    new = store.create("owner@target.example", DAY_MS, 3)
    assert send(smtp_service.smtp_port, "alice@sender.example",
                [alias_address(new)])["data"][0] == 250
    [first] = smtp_sink.messages
    smtp_sink.reset()
    # the target forwards it back to the alias, as it arrived there
    result = send(smtp_service.smtp_port, "owner@target.example", [alias_address(new)],
                  first.content)
    assert status_of(result["data"]) == "554 5.4.6"
    assert smtp_sink.messages == [] and uses_left(store, new.alias.id) == 2


@pytest.mark.parametrize("refusal, expected", [("550 5.1.1 no such user here", "550 5.1.1"),
                                               ("450 4.2.1 mailbox busy", "450 4.2.1")])
def test_several_aliases_one_transaction_with_per_recipient_results(
        refusal, expected, smtp_service, smtp_sink, store):
    first = store.create("first@target.example", DAY_MS, 2)
    refused = store.create("refused@target.example", DAY_MS, 2)
    second = store.create("second@target.example", DAY_MS, 2)
    smtp_sink.script.rcpt["refused@target.example"] = refusal
    result = send(smtp_service.smtp_port, "alice@sender.example",
                  [alias_address(first), alias_address(refused), alias_address(second)])
    assert [status_of(r) for r in result["rcpt"]] == ["250 2.1.5", expected, "250 2.1.5"]
    assert b"refused@target.example" not in result["rcpt"][1][1]  # the target stays private
    assert result["data"][0] == 250
    [message] = smtp_sink.messages
    assert message.rcpt_tos == ["first@target.example", "second@target.example"]
    assert uses_left(store, first.alias.id) == 1
    assert uses_left(store, refused.alias.id) == 2  # its use was released
    assert uses_left(store, second.alias.id) == 1


@pytest.mark.parametrize("refusal, expected", [
    ("451 4.2.2 <{target}>: mailbox full, try again later", "451 4.2.2"),
    ("554 5.7.1 <{target}>: message refused by its owner's filter", "554 5.7.1"),
], ids=["tempfail", "permfail"])
def test_smarthost_verdict_is_passed_back(refusal, expected, smtp_service, smtp_sink, store):
    target = f"owner{secrets.token_hex(4)}@target.example"
    new = store.create(target, DAY_MS, 2)
    smtp_sink.script.message = refusal.format(target=target)  # as real smarthosts word it
    result = send(smtp_service.smtp_port, "alice@sender.example", [alias_address(new)])
    assert status_of(result["data"]) == expected  # the code and the enhanced code pass
    assert target.split("@")[0].encode() not in result["data"][1]  # the words, naming it, do not
    assert smtp_sink.messages == []
    assert uses_left(store, new.alias.id) == 2


def test_smarthost_stalling_past_its_timeout_is_a_4xx(smtp_service, smtp_sink, store):
    new = store.create("owner@target.example", DAY_MS, 2)
    smtp_sink.script.hold = True  # never answers the final dot; the proxy waits 3 s
    result = send(smtp_service.smtp_port, "alice@sender.example", [alias_address(new)])
    assert status_of(result["data"]) == "451 4.4.1"
    assert uses_left(store, new.alias.id) == 2
    smtp_sink.release.set()
    assert smtp_sink.messages == []


def test_smarthost_down_is_a_4xx_at_rcpt(service_factory, store):
    port = free_loopback_port()  # nothing listens there
    service = service_factory(env={"TEMPALIAS_SMARTHOST": f"127.0.0.1:{port}"})
    new = store.create("owner@target.example", DAY_MS, 2)
    result = send(service.smtp_port, "alice@sender.example", [alias_address(new)])
    assert status_of(result["rcpt"][0]) == "451 4.4.1"
    assert uses_left(store, new.alias.id) == 2
    service.stop()


def test_smarthost_dropping_mid_data_is_a_4xx(service_factory, store, own_peer):
    dropper = own_peer()
    dropper.script.drop_after = 300
    service = service_factory(env={"TEMPALIAS_SMARTHOST": dropper.address})
    new = store.create("owner@target.example", DAY_MS, 2)
    body = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1
    body += (b"y" * 998 + b"\r\n") * 300  # well past what the dropper reads
    result = send(service.smtp_port, "alice@sender.example", [alias_address(new)], body)
    assert result["data"][0] // 100 == 4
    assert dropper.bytes_before_drop == [300]
    assert uses_left(store, new.alias.id) == 2
    # The connection stays usable and the process is alive for the next client.
    with RawClient(service.smtp_port) as client:
        assert client.reply()[0] == 220
    service.stop()


def test_redis_stopped_mid_run_is_a_4xx_and_recovers(service_factory, smtp_sink, tmp_path):
    redis = RedisServer(str(tmp_path / "redis"), port=free_loopback_port(), persistent=True)
    redis.start()
    client = connect(redis.url, timeout=5.0)
    store = AliasStore(client)
    try:
        service = service_factory(env={"TEMPALIAS_REDIS_URL": redis.url,
                                       "TEMPALIAS_REDIS_TIMEOUT": "1",
                                       "TEMPALIAS_SMARTHOST": smtp_sink.address})
        new = store.create("owner@target.example", DAY_MS, 5)
        address = alias_address(new)
        assert send(service.smtp_port, "a@sender.example", [address])["data"][0] == 250
        redis.stop()
        result = send(service.smtp_port, "a@sender.example", [address])
        assert status_of(result["rcpt"][0]) == "451 4.3.0"
        redis.start()  # the append-only file brings the alias back
        result = send(service.smtp_port, "a@sender.example", [address])
        assert result["data"][0] == 250
        assert len(smtp_sink.messages) == 2
        assert uses_left(store, new.alias.id) == 3
        service.stop()
    finally:
        client.close()
        redis.stop()


def start_message(client: RawClient, address: str) -> None:
    """Greeting, EHLO, MAIL, RCPT to ``address`` and DATA, pipelined, up to the 354."""
    assert client.reply()[0] == 220
    client.send(b"EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\n"
                b"RCPT TO:<" + address.encode() + b">\r\nDATA\r\n")
    assert [client.reply()[0] for _ in range(4)] == [250, 250, 250, 354]


@pytest.mark.parametrize("ending", ["revoked", "expired"])
def test_an_alias_that_ends_during_data_gets_its_message_and_stays_ended(
        ending, smtp_service, smtp_sink, store):
    # Its use was reserved at RCPT: the message goes; the alias is not brought back by it.
    new = store.create("owner@target.example", 2000 if ending == "expired" else DAY_MS, 3)
    with RawClient(smtp_service.smtp_port) as client:
        start_message(client, alias_address(new))
        client.send(b"Subject: half\r\n\r\nthe first half\r\n")
        if ending == "revoked":
            store.revoke(new.alias.id, token=None)
        else:
            wait_for(lambda: uses_left(store, new.alias.id) == "gone", 10, "the alias to expire")
        client.send(b"the second half\r\n.\r\n")
        assert client.reply()[0] == 250
    [message] = smtp_sink.messages
    assert message.body_after_received() == b"Subject: half\r\n\r\nthe first half\r\n" \
                                            b"the second half\r\n"
    assert uses_left(store, new.alias.id) == "gone"  # nothing of it was written back
    result = send(smtp_service.smtp_port, "a@sender.example", [alias_address(new)])
    assert status_of(result["rcpt"][0]) == "550 5.1.1"
    assert len(smtp_sink.messages) == 1


def test_store_failing_after_the_smarthost_accepted_is_still_250_and_one_copy(
        service_factory, smtp_sink, tmp_path):
    # Saying anything but 250 now would make the client send again what the target already has.
    redis = RedisServer(str(tmp_path / "redis"), port=free_loopback_port(), persistent=False)
    redis.start()
    client = connect(redis.url, timeout=5.0)
    try:
        service = service_factory(env={"TEMPALIAS_REDIS_URL": redis.url,
                                       "TEMPALIAS_REDIS_TIMEOUT": "1",
                                       "TEMPALIAS_SMARTHOST": smtp_sink.address})
        new = AliasStore(client).create("owner@target.example", DAY_MS, 5)
        smtp_sink.script.hold = True
        with RawClient(service.smtp_port) as sender:
            start_message(sender, alias_address(new))
            sender.send(b"Subject: once\r\n\r\nonly once\r\n.\r\n")
            wait_for(lambda: smtp_sink.state.held, 20, "the smarthost to hold the message")
            redis.stop()  # the use can no longer be counted
            smtp_sink.release.set()
            assert sender.reply()[0] == 250
            sender.send(b"QUIT\r\n")
            assert sender.reply()[0] == 221
        assert [m.rcpt_tos for m in smtp_sink.messages] == [["owner@target.example"]]
        service.stop()
        assert len(smtp_sink.messages) == 1  # nothing was sent again, not even on the way out
    finally:
        client.close()
        redis.stop()


def test_swaks_delivers_through_the_proxy(smtp_service, smtp_sink, store):
    import subprocess

    new = store.create("owner@target.example", DAY_MS, 2)
    done = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{smtp_service.smtp_port}", "--to", alias_address(new),
         "--from", "swaks@sender.example", "--helo", "swaks.example", "--pipeline",
         "--body", "sent by swaks", "--timeout", "30"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    [message] = smtp_sink.messages
    assert message.rcpt_tos == ["owner@target.example"]
    assert b"sent by swaks" in message.content


@pytest.fixture(scope="module")
def postmaster_service(service_factory, smtp_sink_server):
    return service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink_server.address,
                                "TEMPALIAS_POSTMASTER": "operator@example.net"})


@pytest.mark.parametrize("recipient", ["postmaster@tempalias.test", "PostMaster@TEMPALIAS.TEST",
                                       "Postmaster"])
def test_postmaster_reaches_the_operator(postmaster_service, smtp_sink, recipient):
    result = send(postmaster_service.smtp_port, "", [recipient], BODY)
    assert result["rcpt"][0][0] == 250 and result["data"][0] == 250
    (message,) = smtp_sink.messages
    assert message.rcpt_tos == ["operator@example.net"]


def test_postmaster_unset_is_refused_with_a_reason(smtp_service, smtp_sink):
    result = send(smtp_service.smtp_port, "a@sender.example", ["postmaster@tempalias.test"])
    code, text = result["rcpt"][0]
    assert (code, text.decode()) == (replies.NO_POSTMASTER.code,
                                     f"{replies.NO_POSTMASTER.status} {replies.NO_POSTMASTER.text}")
    assert smtp_sink.connections == 0


def test_the_log_warns_at_start_that_postmaster_is_unset(smtp_service):
    assert "TEMPALIAS_POSTMASTER is unset" in smtp_service.log_text()


# --- several domains, and custom domains


@pytest.fixture(scope="module")
def two_domain_service(service_factory, smtp_sink_server):
    """Our two domains; custom domains are made active in the store by the tests themselves."""
    return service_factory(env={
        "TEMPALIAS_DOMAINS": "tempalias.test, second.test",
        "TEMPALIAS_SMARTHOST": smtp_sink_server.address,
        "TEMPALIAS_SRS_SECRET": "test-srs-secret",
        "TEMPALIAS_DOMAIN_GRACE": "72h",
    })


@pytest.fixture
def domain_store(store):
    return DomainStore(store.redis, runner=store.runner)


def active_domain(domain_store, since_ms: int | None = None) -> str:
    """A custom domain of this test alone, active; suspended since ``since_ms`` when given."""
    domain = f"d{secrets.token_hex(4)}.example.org"
    now = int(time.time() * 1000)
    domain_store.register(domain, hash_token("owner"), now)
    domain_store.activate(domain, hash_token("owner"), "tempalias-verify=x", now)
    if since_ms is not None:
        domain_store.mark_checked(domain, False, since_ms, 72 * 3600 * 1000)
    return domain


def rcpt_status(port: int, recipient: str) -> str:
    result = send(port, "alice@sender.example", [recipient])
    return status_of(result["rcpt"][0])


def test_an_alias_answers_only_at_its_domain_and_an_old_one_at_each(two_domain_service,
                                                                    smtp_sink, store):
    port = two_domain_service.smtp_port
    second = store.create("second@target.example", DAY_MS, None, domain="second.test")
    old = store.create("old@target.example", DAY_MS, None)  # no domain: made before several
    assert rcpt_status(port, f"{second.alias.id}@tempalias.test") == "550 5.1.1"
    assert rcpt_status(port, f"{old.alias.id}@second.test") == "250 2.1.5"
    assert rcpt_status(port, f"{old.alias.id}@tempalias.test") == "250 2.1.5"
    result = send(port, "alice@sender.example", [f"{second.alias.id}@second.test"])
    assert result["data"][0] == 250
    assert {m.rcpt_tos[0] for m in smtp_sink.messages} == {
        "old@target.example", "second@target.example"}


def test_one_local_part_at_two_custom_domains_is_two_aliases(two_domain_service, smtp_sink,
                                                            store, domain_store):
    first, second = active_domain(domain_store), active_domain(domain_store)
    for domain in (first, second):
        store.create(f"owner@{domain.split('.')[0]}.target.example", DAY_MS, 2, domain=domain,
                     custom=True, local_part="news")
    result = send(two_domain_service.smtp_port, "alice@sender.example",
                  [f"news@{first}", f"NEWS@{second.upper()}"])
    assert [code for code, _ in result["rcpt"]] == [250, 250] and result["data"][0] == 250
    [message] = smtp_sink.messages  # one message, two targets
    assert sorted(message.rcpt_tos) == sorted(
        f"owner@{d.split('.')[0]}.target.example" for d in (first, second))
    assert message.mail_from.startswith("SRS0=")  # the return path names an alias, encoded
    assert uses_left(store, f"news@{first}") == 1 and uses_left(store, f"news@{second}") == 1


def test_a_domain_that_is_neither_ours_nor_active_is_refused_as_before(two_domain_service,
                                                                      smtp_sink, store,
                                                                      domain_store):
    pending = f"d{secrets.token_hex(4)}.example.org"
    domain_store.register(pending, hash_token("owner"), int(time.time() * 1000))
    port = two_domain_service.smtp_port
    for recipient in (f"news@{pending}", "someone@elsewhere.example",
                      f"news@sub.{active_domain(domain_store)}"):
        assert rcpt_status(port, recipient) == "550 5.7.1"
    domain = active_domain(domain_store)
    assert rcpt_status(port, f"nobody@{domain}") == "550 5.1.1"  # active: an unknown alias there
    assert smtp_sink.connections == 0


def test_a_suspended_domain_defers_mail_in_its_grace_period_and_refuses_it_after(
        two_domain_service, smtp_sink, store, domain_store):
    now = int(time.time() * 1000)
    fresh = active_domain(domain_store)
    store.create("owner@target.example", DAY_MS, 2, domain=fresh, custom=True, local_part="a")
    domain_store.mark_checked(fresh, False, now - 3600_000, 72 * 3600_000)
    lapsed = active_domain(domain_store)
    store.create("owner@target.example", DAY_MS, 2, domain=lapsed, custom=True, local_part="a")
    domain_store.mark_checked(lapsed, False, now - 73 * 3600_000, 72 * 3600_000)
    port = two_domain_service.smtp_port
    assert rcpt_status(port, f"a@{fresh}") == "450 4.7.1"
    assert rcpt_status(port, f"a@{lapsed}") == "550 5.7.1"
    assert (replies.DOMAIN_SUSPENDED.code, replies.DOMAIN_LAPSED.code) == (450, 550)
    assert uses_left(store, f"a@{fresh}") == 2 and smtp_sink.connections == 0
