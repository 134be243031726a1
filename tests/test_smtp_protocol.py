"""The SMTP conversation itself: commands, their order, pipelining, budgets and limits.

Driven over real sockets against a real ``tempalias serve`` with a real sink as smarthost; raw
bytes (``RawClient``) where smtplib would not send what we need.
"""

from __future__ import annotations

import smtplib
import socket
import ssl

import pytest

from harness.processes import holder, wait_for
from harness.smtp_peer import RawClient, make_certificate
from tempalias.smtp import replies
from tempalias.store import keys
from test_smtp_forwarding import DAY_MS, alias_address, send, uses_left


def expect(client: RawClient, reply: replies.Reply) -> str:
    code, text = client.reply()
    assert (code, text.split(" ", 1)[0]) == (reply.code, reply.status), text
    return text


def greeted(port: int, helo: bool = True) -> RawClient:
    client = RawClient(port)
    assert client.reply()[0] == 220
    if helo:
        client.send(b"EHLO client.example\r\n")
        assert client.reply()[0] == 250
    return client


def start_message(client: RawClient, new_alias) -> None:
    """MAIL, RCPT to the alias and DATA in one pipelined write, up to the 354."""
    client.send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<"
                + alias_address(new_alias).encode() + b">\r\nDATA\r\n")
    expect(client, replies.SENDER_OK)
    expect(client, replies.RECIPIENT_OK)
    expect(client, replies.START_DATA)


@pytest.fixture
def alias(store):
    return store.create("owner@target.example", DAY_MS, 3)


def test_ehlo_advertises_the_extensions(smtp_service):
    with smtplib.SMTP("127.0.0.1", smtp_service.smtp_port, timeout=30) as client:
        code, _ = client.ehlo("client.example")
        assert code == 250
        assert client.esmtp_features["size"] == str(25 * 1024 * 1024)
        for extension in ("pipelining", "8bitmime", "enhancedstatuscodes", "smtputf8"):
            assert extension in client.esmtp_features
        assert "starttls" not in client.esmtp_features  # no certificate configured


@pytest.mark.parametrize("command, reply", [
    (b"EXPN staff", replies.NOT_IMPLEMENTED),
    (b"TURN", replies.NOT_IMPLEMENTED),
    (b"STARTTLS", replies.NOT_IMPLEMENTED),
    (b"VRFY someone", replies.CANNOT_VERIFY),
    (b"HELP", replies.HELP),
    (b"NOOP", replies.NOOP),
    (b"RSET", replies.RESET),
    (b"RCPT TO:<x@tempalias.test>", replies.NEED_MAIL),
    (b"DATA", replies.NEED_MAIL),
    (b"MAIL FROM:alice@sender.example", replies.SYNTAX),
    (b"MAIL FROM:<alice>", replies.BAD_SENDER_SYNTAX),
    (b"MAIL FROM:<alice@sender.example> FOO=BAR", replies.UNKNOWN_PARAMETER),
    (b"MAIL FROM:<alice@sender.example> SIZE=99999999999", replies.MESSAGE_TOO_BIG),
    (b"MAIL FROM:<j\xc3\xb6rg@sender.example>", replies.NEEDS_SMTPUTF8),
    (b"EHLO", replies.SYNTAX),
])
def test_each_command_gets_its_reply(command, reply, smtp_service):
    with greeted(smtp_service.smtp_port) as client:
        client.send(command + b"\r\n")
        expect(client, reply)
        client.send(b"NOOP\r\n")  # and the connection is still usable
        expect(client, replies.NOOP)


def test_mail_before_helo_and_out_of_order_commands(smtp_service):
    with greeted(smtp_service.smtp_port, helo=False) as client:
        client.send(b"MAIL FROM:<a@sender.example>\r\n")
        expect(client, replies.NEED_HELO)
        client.send(b"HELO client.example\r\nMAIL FROM:<a@sender.example>\r\n"
                    b"MAIL FROM:<a@sender.example>\r\nDATA\r\n")
        assert client.reply()[0] == 250
        expect(client, replies.SENDER_OK)
        expect(client, replies.NESTED_MAIL)
        expect(client, replies.NEED_RCPT)


def test_pipelined_transactions_and_rset(smtp_service, smtp_sink, store, alias):
    address = alias_address(alias).encode()
    with greeted(smtp_service.smtp_port) as client:
        client.send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<" + address + b">\r\n"
                    b"RCPT TO:<nobody1234@tempalias.test>\r\nDATA\r\n")
        expect(client, replies.SENDER_OK)
        expect(client, replies.RECIPIENT_OK)
        expect(client, replies.NO_SUCH_ALIAS)
        expect(client, replies.START_DATA)
        client.send(b"Subject: one\r\n\r\nfirst\r\n.\r\n"
                    b"MAIL FROM:<b@sender.example>\r\nRCPT TO:<" + address + b">\r\nRSET\r\n"
                    b"MAIL FROM:<c@sender.example>\r\nRCPT TO:<" + address + b">\r\nDATA\r\n")
        expect(client, replies.QUEUED)
        expect(client, replies.SENDER_OK)
        expect(client, replies.RECIPIENT_OK)
        expect(client, replies.RESET)
        expect(client, replies.SENDER_OK)
        expect(client, replies.RECIPIENT_OK)
        expect(client, replies.START_DATA)
        client.send(b"Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
        expect(client, replies.QUEUED)
        expect(client, replies.CLOSING)
        assert client.at_eof()
    assert [m.mail_from.rsplit("=", 1)[1] for m in smtp_sink.messages] == \
        ["a@tempalias.test", "c@tempalias.test"]
    assert uses_left(store, alias.alias.id) == 1  # two messages; the reset one used nothing


def test_null_sender_is_accepted(smtp_service, smtp_sink, alias):
    result = send(smtp_service.smtp_port, "", [alias_address(alias)])
    assert result["mail"][0] == 250 and result["data"][0] == 250
    assert smtp_sink.messages[0].mail_from == "<>"


def test_a_sender_at_a_host_name_without_a_dot_is_accepted(smtp_service, smtp_sink, alias):
    """swaks's default sender is user@host-name; Postfix takes it too unless told not to."""
    result = send(smtp_service.smtp_port, "root@vm", [alias_address(alias)])
    assert result["mail"][0] == 250 and result["data"][0] == 250
    assert smtp_sink.messages[0].mail_from.endswith("=vm=root@tempalias.test")


def test_smtputf8_sender_and_target(smtp_service, smtp_sink, store):
    new = store.create("müller@target.example", DAY_MS, 3)
    body = "Subject: grüße\r\n\r\nöäü\r\n".encode()
    with smtplib.SMTP("127.0.0.1", smtp_service.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        # Without SMTPUTF8 the non-ASCII target cannot be reached, and we say so at RCPT.
        client.mail("plain@sender.example")
        code, text = client.rcpt(alias_address(new))
        assert (code, text[:5]) == (553, b"5.6.7")
        client.rset()
        client.sendmail("jörg@sender.example", [alias_address(new)], body,
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [message] = smtp_sink.messages
    assert message.rcpt_tos == ["müller@target.example"]
    assert message.mail_from.endswith("=sender.example=jörg@tempalias.test")
    assert "SMTPUTF8" in message.mail_options
    assert message.body_after_received() == body
    assert uses_left(store, new.alias.id) == 2


def test_over_long_lines_are_refused_and_the_connection_stays_usable(
        smtp_service, smtp_sink, store, alias):
    with greeted(smtp_service.smtp_port) as client:
        client.send(b"NOOP " + b"x" * 600 + b"\r\n")
        expect(client, replies.COMMAND_TOO_LONG)
        start_message(client, alias)
        client.send(b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\nafter\r\n.\r\n")
        expect(client, replies.TEXT_LINE_TOO_LONG)
        client.send(b"NOOP\r\n")
        expect(client, replies.NOOP)
    assert smtp_sink.messages == []
    assert uses_left(store, alias.alias.id) == 3


def test_over_long_line_arriving_before_its_end_is_refused(smtp_service, smtp_sink, store, alias):
    with greeted(smtp_service.smtp_port) as client:
        start_message(client, alias)
        client.send(b"Subject: long\r\n\r\n" + b"z" * 70000)  # more than one read, no line end
        client.send(b"z" * 5000 + b"\r\nafter\r\n.\r\n")
        expect(client, replies.TEXT_LINE_TOO_LONG)
        client.send(b"NOOP\r\n")
        expect(client, replies.NOOP)
    assert smtp_sink.messages == []
    assert uses_left(store, alias.alias.id) == 3


def test_message_arriving_in_small_pieces_is_forwarded_unchanged(smtp_service, smtp_sink, alias):
    body = (b"Subject: pieces\r\n\r\n.dot first\r\n..two dots\r\n.\r\nplain\r\n"
            + b"y" * 990 + b"\r\n.end\r\n")
    wire = body.replace(b"\r\n.", b"\r\n..") + b".\r\n"  # dot-stuffed, then the final dot
    with greeted(smtp_service.smtp_port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start_message(client, alias)
        for at in range(0, len(wire), 3):  # the final dot's line, too, comes in pieces
            client.send(wire[at:at + 3])
        expect(client, replies.QUEUED)
    [message] = smtp_sink.messages
    assert message.body_after_received() == body


def test_lines_of_exactly_1000_octets_pass(smtp_service, smtp_sink, alias):
    body = b"Subject: edge\r\n\r\n" + b"a" * 998 + b"\r\n" + b"." + b"b" * 997 + b"\r\n"
    assert send(smtp_service.smtp_port, "a@sender.example", [alias_address(alias)],
                body)["data"][0] == 250
    assert smtp_sink.messages[0].body_after_received() == body


@pytest.mark.parametrize("bad_line", [b"bare LF here\n", b"bare CR\rhere\r\n"])
def test_bare_line_ends_close_the_connection(bad_line, smtp_service, smtp_sink, store, alias):
    with greeted(smtp_service.smtp_port) as client:
        start_message(client, alias)
        client.send(b"Subject: smuggle\r\n\r\n" + bad_line + b".\r\nMAIL FROM:<x@y.example>\r\n")
        expect(client, replies.BARE_LINE_END)
        assert client.at_eof()
    wait_for(lambda: uses_left(store, alias.alias.id) == 3, 10, "the use to be released")
    assert smtp_sink.messages == []


def test_too_many_recipients(smtp_service, smtp_sink, alias):
    address = f"RCPT TO:<{alias_address(alias)}>\r\n".encode()
    with greeted(smtp_service.smtp_port) as client:
        client.send(b"MAIL FROM:<a@sender.example>\r\n" + address * 101)
        expect(client, replies.SENDER_OK)
        for _ in range(100):
            expect(client, replies.RECIPIENT_OK)
        expect(client, replies.TOO_MANY_RECIPIENTS)


def test_too_many_bad_commands_close_the_connection(smtp_service):
    with greeted(smtp_service.smtp_port) as client:
        for _ in range(4):  # the service under test allows 5
            client.send(b"BOGUS\r\n")
            expect(client, replies.NOT_IMPLEMENTED)
        client.send(b"BOGUS\r\n")
        expect(client, replies.TOO_MANY_ERRORS)
        assert client.at_eof()


def test_client_that_disconnects_mid_data_costs_nothing(smtp_service, smtp_sink, store, alias):
    with greeted(smtp_service.smtp_port) as client:
        start_message(client, alias)
        client.send(b"Subject: half\r\n\r\n" + b"half a message\r\n" * 5000)
        client_port = client.local_port
    # The session ends (its use released) before its connection is closed.
    wait_for(lambda: holder([smtp_service.pid], client_port) is None, 10,
             "the proxy to close the abandoned session")
    assert uses_left(store, alias.alias.id) == 3
    assert smtp_sink.messages == []


def test_oversized_message_is_read_to_its_end_and_refused(service_factory, smtp_sink, store):
    service = service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink.address,
                                   "TEMPALIAS_MAX_MESSAGE_SIZE": "4096"})
    new = store.create("owner@target.example", DAY_MS, 3)
    big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 100
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.esmtp_features["size"] == "4096"
        client.mail("a@sender.example")
        client.rcpt(alias_address(new))
        code, text = client.data(big)
        assert (code, text[:5]) == (552, b"5.3.4")
        # The same connection goes on working.
        client.sendmail("a@sender.example", [alias_address(new)], b"Subject: small\r\n\r\nok\r\n")
    [message] = smtp_sink.messages
    assert b"Subject: small" in message.content
    assert uses_left(store, new.alias.id) == 2
    service.stop()


def test_idle_and_data_timeouts_close_with_421(service_factory, smtp_sink, store):
    service = service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink.address,
                                   "TEMPALIAS_SMTP_IDLE_TIMEOUT": "2",
                                   "TEMPALIAS_SMTP_DATA_TIMEOUT": "1"})
    new = store.create("owner@target.example", DAY_MS, 3)
    with greeted(service.smtp_port) as client:  # then says nothing
        text = expect(client, replies.IDLE_TIMEOUT)
        assert "command" in text
        assert client.at_eof()
    with greeted(service.smtp_port) as client:
        start_message(client, new)
        client.send(b"Subject: slow\r\n\r\n")  # and the rest never comes
        text = expect(client, replies.DATA_TIMEOUT)
        assert "message" in text
        assert client.at_eof()
    wait_for(lambda: uses_left(store, new.alias.id) == 3, 10, "the use to be released")
    assert smtp_sink.messages == []
    service.stop()


def test_connections_over_the_bound_get_421(service_factory, smtp_sink):
    service = service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink.address,
                                   "TEMPALIAS_SMTP_MAX_CONNECTIONS": "2"})
    first, second = greeted(service.smtp_port), greeted(service.smtp_port)
    try:
        with RawClient(service.smtp_port) as third:
            expect(third, replies.TOO_BUSY)
            assert third.at_eof()
    finally:
        first.close()
        second.close()
    wait_for(lambda: _greets(service.smtp_port), 10, "a free slot after the others left")
    service.stop()


def _greets(port: int) -> bool:
    with RawClient(port) as client:
        return client.reply()[0] == 220


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"), "tempalias.test")


def test_starttls(service_factory, smtp_sink, store, tls_files):
    cert, key = tls_files
    service = service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink.address,
                                   "TEMPALIAS_TLS_CERT": str(cert), "TEMPALIAS_TLS_KEY": str(key)})
    new = store.create("owner@target.example", DAY_MS, 3)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        assert "starttls" in client.esmtp_features
        code, _ = client.starttls(context=context)
        assert code == 220
        client.ehlo("client.example")
        assert "starttls" not in client.esmtp_features
        client.sendmail("a@sender.example", [alias_address(new)], b"Subject: tls\r\n\r\nsealed\r\n")
    [message] = smtp_sink.messages
    assert b" with ESMTPS id " in message.unsealed().split(b"\r\n", 3)[1]

    # RFC 3207 section 4.2: plaintext sent after STARTTLS, before the handshake, is thrown away.
    with greeted(service.smtp_port) as client:
        client.send(b"STARTTLS\r\nRSET\r\n")
        expect(client, replies.READY_FOR_TLS)
        tls = context.wrap_socket(client.sock, server_hostname="tempalias.test")
        reader = tls.makefile("rb")
        tls.sendall(b"EHLO client.example\r\n")
        first = reader.readline()
        assert first.startswith(b"250-tempalias.test greets"), first  # not the RSET's 250
        reader.close()
        tls.close()
    service.stop()


def test_sigterm_drains_then_says_421_and_releases_held_uses(service_factory, smtp_sink, store):
    import os
    import signal

    service = service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink.address,
                                   "TEMPALIAS_DRAIN_SECONDS": "2"})
    new = store.create("owner@target.example", DAY_MS, 3)
    idle = greeted(service.smtp_port)
    busy = greeted(service.smtp_port)
    try:
        busy.send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<"
                  + alias_address(new).encode() + b">\r\n")
        expect(busy, replies.SENDER_OK)
        expect(busy, replies.RECIPIENT_OK)
        os.kill(service.pid, signal.SIGTERM)
        for client in (idle, busy):
            expect(client, replies.SHUTTING_DOWN)
            assert client.at_eof()
    finally:
        idle.close()
        busy.close()
    wait_for(lambda: service.process.poll() is not None, 30, "tempalias to exit after draining")
    assert service.stop() == 0
    assert uses_left(store, new.alias.id) == 3
    assert store.redis.zcard(keys.held_key(new.alias.id)) == 0
