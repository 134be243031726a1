"""The smarthost client (tempalias/smtp/relay.py): TLS to the smarthost, and kept connections.

Each test runs its own sink and its own tempalias, because each needs the smarthost configured
in a particular way.
"""

from __future__ import annotations

import smtplib
import ssl

import psutil
import pytest

from harness.processes import wait_for
from harness.smtp_peer import make_certificate
from tempalias.smtp import replies
from test_smtp_forwarding import DAY_MS, alias_address, send, status_of, uses_left


@pytest.fixture(scope="module")
def sink_tls_context(tmp_path_factory):
    cert, key = make_certificate(tmp_path_factory.mktemp("sink-tls"), "smarthost.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


def test_opportunistic_tls_is_used_when_offered(service_factory, store, own_peer,
                                                 sink_tls_context):
    sink = own_peer(tls_context=sink_tls_context)
    service = service_factory(env={"TEMPALIAS_SMARTHOST": sink.address,
                                   "TEMPALIAS_SMARTHOST_TLS": "opportunistic"})
    new = store.create("owner@target.example", DAY_MS, 2)
    assert send(service.smtp_port, "a@sender.example", [alias_address(new)])["data"][0] == 250
    [message] = sink.messages
    assert message.tls
    service.stop()


def test_required_tls_without_an_offer_is_a_4xx(service_factory, store, own_peer):
    sink = own_peer()  # no STARTTLS
    service = service_factory(env={"TEMPALIAS_SMARTHOST": sink.address,
                                   "TEMPALIAS_SMARTHOST_TLS": "required"})
    new = store.create("owner@target.example", DAY_MS, 2)
    result = send(service.smtp_port, "a@sender.example", [alias_address(new)])
    assert status_of(result["rcpt"][0]) == "451 4.4.1"
    assert sink.messages == []
    assert uses_left(store, new.alias.id) == 2
    service.stop()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
def test_kept_connection_closed_by_the_smarthost_is_replaced(service_factory, store, own_peer,
                                                             pipelining):
    sink = own_peer(idle_timeout=1, pipelining=pipelining)  # hangs up on connections idle for 1 s
    service = service_factory(env={"TEMPALIAS_SMARTHOST": sink.address})
    new = store.create("owner@target.example", DAY_MS, 5)
    assert send(service.smtp_port, "a@sender.example", [alias_address(new)])["data"][0] == 250

    def kept_connection_closed_by_peer():
        return any(c.status == psutil.CONN_CLOSE_WAIT and c.raddr and c.raddr.port == sink.port
                   for c in psutil.Process(service.pid).net_connections(kind="inet"))

    wait_for(kept_connection_closed_by_peer, 20, "the sink to close the idle connection")
    assert send(service.smtp_port, "a@sender.example", [alias_address(new)])["data"][0] == 250
    assert len(sink.messages) == 2
    assert sink.connections == 2
    assert uses_left(store, new.alias.id) == 3
    service.stop()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
def test_one_connection_carries_consecutive_messages(service_factory, store, own_peer, pipelining):
    sink = own_peer(pipelining=pipelining)
    service = service_factory(env={"TEMPALIAS_SMARTHOST": sink.address})
    new = store.create("owner@target.example", DAY_MS, 5)
    for _ in range(3):
        assert send(service.smtp_port, "a@sender.example", [alias_address(new)])["data"][0] == 250
    assert [m.rcpt_tos for m in sink.messages] == [["owner@target.example"]] * 3
    assert sink.connections == 1
    # A kept connection is checked with RSET before each later message (pipelined with MAIL
    # when the smarthost allows it).
    assert sink.resets == 2
    assert uses_left(store, new.alias.id) == 2
    service.stop()


def test_mail_and_first_rcpt_go_out_together_when_pipelining_is_offered(service_factory, store,
                                                                         own_peer):
    # Before it answers a MAIL or RSET the recorder waits 2 s for more: a client that pipelines
    # shows its commands in one batch, one that waits for each answer shows them one at a time.
    recorder = own_peer(patience=2.0)
    service = service_factory(env={"TEMPALIAS_SMARTHOST": recorder.address})
    new = store.create("owner@target.example", DAY_MS, 5)
    other = store.create("other@target.example", DAY_MS, 5)
    assert send(service.smtp_port, "a@sender.example", [alias_address(new)])["data"][0] == 250
    result = send(service.smtp_port, "a@sender.example",
                  [alias_address(new), alias_address(other)])
    assert [code for code, _ in result["rcpt"]] == [250, 250]
    assert result["data"][0] == 250
    # One round trip for the first recipient; the kept connection's RSET rides along.
    assert recorder.batches == [["MAIL", "RCPT"], ["RSET", "MAIL", "RCPT"], ["RCPT"]]
    assert len(recorder.messages) == 2
    assert uses_left(store, new.alias.id) == 3
    service.stop()


def test_a_connection_is_replaced_after_its_message_budget(service_factory, store, own_peer):
    sink = own_peer()
    service = service_factory(env={"TEMPALIAS_SMARTHOST": sink.address,
                                   "TEMPALIAS_SMARTHOST_MAX_MESSAGES": "2"})
    new = store.create("owner@target.example", DAY_MS, None)
    for _ in range(5):
        assert send(service.smtp_port, "a@sender.example", [alias_address(new)])["data"][0] == 250
    assert len(sink.messages) == 5
    assert sink.connections == 3  # 2 + 2 + 1 messages
    service.stop()


def test_idle_connection_is_closed_without_a_next_message(service_factory, store, own_peer):
    sink = own_peer()
    service = service_factory(env={"TEMPALIAS_SMARTHOST": sink.address,
                                   "TEMPALIAS_SMARTHOST_IDLE_SECONDS": "0.3"})
    new = store.create("owner@target.example", DAY_MS, None)
    assert send(service.smtp_port, "a@sender.example", [alias_address(new)])["data"][0] == 250
    assert sink.connections == 1
    wait_for(lambda: sink.quits == 1, 10, "tempalias to close its idle smarthost connection")
    assert send(service.smtp_port, "a@sender.example", [alias_address(new)])["data"][0] == 250
    assert sink.connections == 2
    service.stop()


def test_smarthost_refusing_the_data_command_is_the_verdict_on_the_message(service_factory,
                                                                           store, own_peer):
    # The client is told 354 at once and sends its message; the smarthost's refusal of DATA,
    # read before any of the message goes out, is the answer to the final dot.
    refusing = own_peer()
    refusing.script.replies["DATA"] = "452 4.3.1 no room for more mail"
    service = service_factory(env={"TEMPALIAS_SMARTHOST": refusing.address})
    new = store.create("owner@target.example", DAY_MS, 5)
    result = send(service.smtp_port, "a@sender.example", [alias_address(new)])
    assert status_of(result["data"]) == "452 4.3.1"
    assert refusing.messages == []
    assert uses_left(store, new.alias.id) == 5
    service.stop()


def test_a_smarthost_without_smtputf8_gets_no_utf8_envelope(service_factory, store, own_peer):
    sink = own_peer(smtputf8=False)
    service = service_factory(env={"TEMPALIAS_SMARTHOST": sink.address})
    new = store.create("owner@target.example", DAY_MS, 2)
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        client.mail("jörg@sender.example", ["SMTPUTF8"])
        code, text = client.rcpt(alias_address(new))
        assert (code, text.decode()) == (
            replies.SMTPUTF8_NOT_DELIVERABLE.code,
            f"{replies.SMTPUTF8_NOT_DELIVERABLE.status} {replies.SMTPUTF8_NOT_DELIVERABLE.text}")
        client.rset()
        client.sendmail("plain@sender.example", [alias_address(new)], b"Subject: ascii\r\n\r\nok\r\n")
    assert [m.mail_from.split("=")[-1] for m in sink.messages] == ["plain@tempalias.test"]
    assert uses_left(store, new.alias.id) == 1
    service.stop()


@pytest.mark.parametrize("where", ["RCPT", "end of DATA"])
def test_a_smarthost_closing_with_421_is_a_451_that_keeps_our_client(where, service_factory, store,
                                                                     own_peer):
    # 421 says the smarthost closes its connection; ours, with our client, stays open.
    smarthost = own_peer()
    if where == "RCPT":
        smarthost.script.replies["RCPT"] = "421 4.4.2 smarthost.test closing for maintenance"
    else:
        smarthost.script.message = "421 4.3.2 smarthost.test shutting down"
    service = service_factory(env={"TEMPALIAS_SMARTHOST": smarthost.address})
    new = store.create("owner@target.example", DAY_MS, 2)
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        client.mail("a@sender.example")
        code, text = client.rcpt(alias_address(new))
        if where == "RCPT":
            assert status_of((code, text)) == "451 4.4.2"
        else:
            assert code == 250
            assert status_of(client.data(b"Subject: hi\r\n\r\nhello\r\n")) == "451 4.3.2"
        assert client.noop()[0] == 250
    assert smarthost.messages == []
    assert uses_left(store, new.alias.id) == 2
    service.stop()


SMARTHOST_LOGIN = ("relay-user", "s3cret-Pa55 word")


@pytest.mark.parametrize("password", [SMARTHOST_LOGIN[1], "wr0ng-Pa55"], ids=["right", "wrong"])
def test_smarthost_auth(service_factory, store, own_peer, password):
    # The sink takes no mail before AUTH (over plain loopback: TLS is tested above).
    sink = own_peer(login=SMARTHOST_LOGIN)
    service = service_factory(env={"TEMPALIAS_SMARTHOST": sink.address,
                                   "TEMPALIAS_SMARTHOST_USER": SMARTHOST_LOGIN[0],
                                   "TEMPALIAS_SMARTHOST_PASSWORD": password})
    new = store.create("owner@target.example", DAY_MS, 2)
    result = send(service.smtp_port, "a@sender.example", [alias_address(new)])
    if password == SMARTHOST_LOGIN[1]:
        assert result["data"][0] == 250
        assert [m.rcpt_tos for m in sink.messages] == [["owner@target.example"]]
        assert uses_left(store, new.alias.id) == 1
    else:
        # Refused credentials are the operator's to fix: senders are told to try again later.
        assert status_of(result["rcpt"][0]) == "451 4.4.1"
        assert sink.messages == []
        assert uses_left(store, new.alias.id) == 2
    service.stop()
    assert password not in service.log_text()
