"""Locust scenarios for both of tempalias's doors.

- ``AliasOwner`` (HTTP): creates aliases (REST API and, now and then, the legacy JSONP door),
  looks them up with their token, revokes some and checks that a revoked one is gone.
- ``MailSender`` (SMTP): a custom ``User`` speaking SMTP with smtplib (Locust monkey-patches, so
  it is gevent-friendly), sending to live aliases (expects 250) and to unknown ones (expects 550);
  each SMTP transaction, MAIL FROM to the verdict, is reported to Locust as one request with its
  latency, so Locust's tables and charts cover both doors.

Aliases that owners will never revoke go into a shared pool that the senders draw from, so a 250
is always expected for a live alias and any other answer is a failure. Run it through
``make loadtest`` (loadtest/run.py), which starts a throwaway stack with every limit off (with
``--cluster``, several nodes: HTTP through their nginx front, SMTP users spread over their ports);
by hand: ``locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --smtp-port 2525``.
"""

from __future__ import annotations

import itertools
import random
import secrets
import smtplib
import time
from collections import deque

from locust import FastHttpUser, User, between, events, task

LIVE_POOL_SIZE = 5000
OWNED_PER_USER = 200
REVOKED_SHARE = 0.2  # of the aliases an owner creates, this share is kept to be revoked later
SMTP_TIMEOUT = 30.0
# Refused recipients one connection carries before the sender opens another: below the service's
# TEMPALIAS_SMTP_MAX_BAD_RECIPIENTS (5), past which it slows each answer and then closes, as it
# should for a guesser. An MTA whose recipients bounce reaches them over many connections.
REFUSED_PER_CONNECTION = 4
SENDER = "loadtest@sender.example"

# Addresses of aliases nobody revokes: the senders' live recipients. Shared by the users of one
# Locust process (a distributed run fills one pool per worker process).
live_aliases: deque[str] = deque(maxlen=LIVE_POOL_SIZE)
# Which of the SMTP ports the next SMTP user takes: users spread evenly over the nodes.
smtp_users_started = itertools.count()


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    parser.add_argument("--smtp-host", default="127.0.0.1", help="tempalias's SMTP address")
    parser.add_argument("--smtp-port", default="2525",
                        help="tempalias's SMTP port, or several comma-separated (the nodes of a "
                             "cluster): each SMTP user takes the next")
    parser.add_argument("--alias-domain", default="tempalias.test",
                        help="the service's alias domain, for the unknown-alias sends")
    parser.add_argument("--message-bytes", type=int, default=2048, help="body size of each message")


def _target() -> str:
    return f"lt-{secrets.token_hex(6)}@example.org"


class AliasOwner(FastHttpUser):
    wait_time = between(0.05, 0.2)
    weight = 1

    def on_start(self) -> None:
        self.owned: deque[tuple[str, str]] = deque(maxlen=OWNED_PER_USER)  # (id, token)
        self.to_revoke: list[tuple[str, str]] = []

    @task(3)
    def create(self) -> None:
        with self.client.post("/api/v1/aliases", json={"target": _target(), "days": 1},
                              name="POST /api/v1/aliases", catch_response=True) as response:
            if response.status_code != 201:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            body = response.json()
            if not body.get("token") or not body.get("address"):
                response.failure(f"no token or address in {body}")
                return
        owned = (body["id"], body["token"])
        self.owned.append(owned)
        if random.random() < REVOKED_SHARE:
            self.to_revoke.append(owned)
        else:
            live_aliases.append(body["address"])

    @task(1)
    def create_legacy_jsonp(self) -> None:
        query = {"callback": "handleAlias", "target": _target(), "days": "1"}
        with self.client.get("/aliases", params=query, name="GET /aliases?callback (legacy JSONP)",
                             catch_response=True) as response:
            if response.status_code != 200 or '"aid"' not in response.text \
                    or not response.text.startswith("/**/handleAlias("):
                response.failure(f"status {response.status_code}: {response.text[:200]}")

    @task(5)
    def look_up(self) -> None:
        if not self.owned:
            return self.create()
        alias_id, token = random.choice(self.owned)
        with self.client.get(f"/api/v1/aliases/{alias_id}", name="GET /api/v1/aliases/[id]",
                             headers={"Authorization": f"Bearer {token}"},
                             catch_response=True) as response:
            if response.status_code != 200 or response.json().get("id") != alias_id:
                response.failure(f"status {response.status_code}: {response.text[:200]}")

    @task(1)
    def revoke(self) -> None:
        if not self.to_revoke:
            return
        owned = self.to_revoke.pop()
        alias_id, token = owned
        if owned in self.owned:
            self.owned.remove(owned)
        auth = {"Authorization": f"Bearer {token}"}
        with self.client.delete(f"/api/v1/aliases/{alias_id}", headers=auth,
                                name="DELETE /api/v1/aliases/[id]",
                                catch_response=True) as response:
            if response.status_code != 204:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
        with self.client.get(f"/api/v1/aliases/{alias_id}", headers=auth,
                             name="GET revoked alias (expects 404)", catch_response=True) as response:
            if response.status_code == 404:
                response.success()
            else:
                response.failure(f"a revoked alias answered {response.status_code}")


class UnexpectedReply(Exception):
    """The server answered something other than what this transaction expects."""


class MailSender(User):
    """Sends over one SMTP connection per user (reconnecting after any error, and after
    ``REFUSED_PER_CONNECTION`` unknown recipients), as an MTA would."""

    wait_time = between(0.05, 0.2)
    weight = 1

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.smtp_host = getattr(options, "smtp_host", "127.0.0.1")
        ports = [int(port) for port in str(getattr(options, "smtp_port", 2525)).split(",")]
        self.smtp_port = ports[next(smtp_users_started) % len(ports)]
        self.domain = getattr(options, "alias_domain", "tempalias.test")
        size = getattr(options, "message_bytes", 2048)
        line = b"x" * 76 + b"\r\n"
        body = (line * (size // len(line) + 1))[:size]
        self.message = (b"From: <" + SENDER.encode() + b">\r\nSubject: load test\r\n\r\n"
                        + body + b"\r\n")
        self.client: smtplib.SMTP | None = None
        self.refused_here = 0  # refused recipients on the current connection

    def on_stop(self) -> None:
        self._close(quit_first=True)

    def _close(self, quit_first: bool = False) -> None:
        client, self.client = self.client, None
        self.refused_here = 0
        if client is None:
            return
        try:
            if quit_first:
                client.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            client.close()

    def _connected(self) -> smtplib.SMTP:
        if self.client is None:
            client = smtplib.SMTP(timeout=SMTP_TIMEOUT, local_hostname="locust.loadtest")
            try:
                code, text = client.connect(self.smtp_host, self.smtp_port)
                if code != 220:
                    raise UnexpectedReply(f"greeting {code} {text!r}")
                code, text = client.ehlo()
                if code != 250:
                    raise UnexpectedReply(f"EHLO {code} {text!r}")
            except BaseException:
                client.close()
                raise
            self.client = client
        return self.client

    def _transaction(self, name: str, recipient: str, expect_refusal: bool) -> None:
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            client = self._connected()
            code, text = client.mail(SENDER)
            if code != 250:
                raise UnexpectedReply(f"MAIL {code} {text!r}")
            code, text = client.rcpt(recipient)
            if expect_refusal:
                if code != 550:
                    raise UnexpectedReply(f"RCPT to an unknown alias got {code} {text!r}")
                code, text = client.rset()
                if code != 250:
                    raise UnexpectedReply(f"RSET {code} {text!r}")
                self.refused_here += 1
                if self.refused_here >= REFUSED_PER_CONNECTION:
                    self._close(quit_first=True)
            else:
                if code != 250:
                    raise UnexpectedReply(f"RCPT {code} {text!r}")
                code, text = client.data(self.message)
                if code != 250:
                    raise UnexpectedReply(f"DATA {code} {text!r}")
        except (OSError, smtplib.SMTPException, UnexpectedReply) as exc:
            failure = exc
            self._close()
        self.environment.events.request.fire(
            request_type="SMTP", name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=0 if expect_refusal else len(self.message), exception=failure,
            context={})

    @task(4)
    def send_to_live_alias(self) -> None:
        if not live_aliases:
            return  # no alias created yet: nothing to measure
        self._transaction("send to a live alias (expects 250)", random.choice(live_aliases),
                          expect_refusal=False)

    @task(1)
    def send_to_unknown_alias(self) -> None:
        unknown = f"zz{secrets.token_hex(8)}@{self.domain}"  # 18 characters: never a real id
        self._transaction("send to an unknown alias (expects 550)", unknown, expect_refusal=True)
