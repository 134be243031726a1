"""Traffic through several tempalias nodes while Redis fails over, every answer kept for checks.

Threads (the test process is not gevent's) create aliases, look them up on another node and send
messages through a third, round robin over the nodes, each answer recorded with its moment. A
sender takes one alias of ``uses`` uses at a time and sends to it until it is refused, retrying
whatever was answered 4xx, so that afterwards each alias's story can be checked: exactly ``uses``
messages answered 250, the refusal only after them, and the sink holding each of those messages
once.
"""

from __future__ import annotations

import itertools
import secrets
import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from harness.processes import ServiceProcess

TARGET = "owner@failover.example"
SENDER = "sender@failover.example"
HTTP_TIMEOUT = 15.0
SMTP_TIMEOUT = 30.0


@dataclass
class Answer:
    what: str  # "create", "lookup" or "send"
    node: int
    code: int  # HTTP status, or the SMTP reply code that decided the attempt (0: no answer)
    at: float  # time.monotonic()
    detail: str = ""


@dataclass
class Story:
    """One alias a sender used up: the Message-IDs answered 250 and what ended it."""

    address: str
    uses: int
    delivered: list[str] = field(default_factory=list)
    refusal: str = ""


class FailoverLoad:
    def __init__(self, nodes: list[ServiceProcess], uses: int = 3, creators: int = 2,
                 senders: int = 3) -> None:
        self.nodes = nodes
        self.uses = uses
        self.answers: list[Answer] = []
        self.created: list[dict] = []  # every alias answered 201: id, token, address
        self.stories: list[Story] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._threads = [threading.Thread(target=self._creating, daemon=True)
                         for _ in range(creators)]
        self._threads += [threading.Thread(target=self._sending, daemon=True)
                          for _ in range(senders)]

    # --- running

    def start(self) -> "FailoverLoad":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop taking new aliases; senders finish the one they hold (within ``timeout``)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self._threads), (
            "load did not finish", self.codes("create"), self.codes("send"),
            Counter((answer.code, answer.detail[:60]) for answer in self.troubled()))

    def _node(self) -> tuple[int, ServiceProcess]:
        index = next(self._turn) % len(self.nodes)
        return index, self.nodes[index]

    def _note(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    # --- HTTP

    def create(self, uses: int | None = None) -> dict | None:
        index, node = self._node()
        try:
            response = requests.post(f"{node.http_url}/api/v1/aliases", timeout=HTTP_TIMEOUT,
                                     json={"target": TARGET, "uses": uses or self.uses})
        except requests.RequestException as exc:
            self._note(Answer("create", index, 0, time.monotonic(), repr(exc)))
            return None
        detail = response.headers.get("Retry-After", "") if response.status_code == 503 else ""
        self._note(Answer("create", index, response.status_code, time.monotonic(), detail))
        if response.status_code != 201:
            return None
        made = response.json()
        with self._lock:
            self.created.append(made)
        return made

    def lookup(self, made: dict) -> int:
        index, node = self._node()
        try:
            response = requests.get(f"{node.http_url}/api/v1/aliases/{made['id']}",
                                    headers={"Authorization": f"Bearer {made['token']}"},
                                    timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            self._note(Answer("lookup", index, 0, time.monotonic(), repr(exc)))
            return 0
        self._note(Answer("lookup", index, response.status_code, time.monotonic()))
        return response.status_code

    def _creating(self) -> None:
        while not self._stop.is_set():
            made = self.create()
            if made is not None:
                self.lookup(made)

    # --- SMTP

    def send(self, address: str) -> tuple[int, str, str]:
        """One message to ``address`` through the next node: (code, text, its Message-ID); the
        code of the reply that decided it, 0 when no answer came."""
        index, node = self._node()
        message_id = f"<{secrets.token_hex(12)}@failover.example>"
        body = (f"From: {SENDER}\r\nTo: {address}\r\nSubject: failover\r\n"
                f"Message-ID: {message_id}\r\n\r\nhello\r\n").encode()
        try:
            with smtplib.SMTP("127.0.0.1", node.smtp_port, timeout=SMTP_TIMEOUT) as client:
                client.sendmail(SENDER, [address], body)
            code, text = 250, ""
        except smtplib.SMTPRecipientsRefused as exc:
            code, raw = exc.recipients[address]
            text = raw.decode(errors="replace")
        except smtplib.SMTPResponseException as exc:
            code, text = exc.smtp_code, exc.smtp_error.decode(errors="replace")
        except (OSError, smtplib.SMTPException) as exc:
            code, text = 0, repr(exc)
        self._note(Answer("send", index, code, time.monotonic(), text))
        return code, text, message_id

    def use_up(self, made: dict) -> Story:
        """Send to the alias until it is refused for good; 4xx and no answer are tried again."""
        story = Story(made["address"], self.uses)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            code, text, message_id = self.send(made["address"])
            if code == 250:
                story.delivered.append(message_id)
            elif code >= 500:
                story.refusal = f"{code} {text}"
                break
        with self._lock:
            self.stories.append(story)
        return story

    def _sending(self) -> None:
        while not self._stop.is_set():
            made = self.create()
            if made is not None:
                self.use_up(made)

    # --- what happened

    def codes(self, what: str) -> Counter:
        return Counter(answer.code for answer in self.answers if answer.what == what)

    def troubled(self) -> list[Answer]:
        """The answers that were neither a success nor a refusal of a used-up alias."""
        return [answer for answer in self.answers
                if answer.code not in (200, 201, 250) and not (
                    answer.what == "send" and answer.code == 550)]

    def trouble_window(self) -> float:
        """Seconds from the first troubled answer to the last (0 when there was none)."""
        moments = [answer.at for answer in self.troubled()]
        return max(moments) - min(moments) if moments else 0.0
