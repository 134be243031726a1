"""The HTTP server of a running tempalias (tempalias/httpserver.py), seen from its clients.

Clients connect from loopback addresses other than 127.0.0.1 (which is a trusted network), each
test from addresses of its own, so the server counts them as different clients.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import http.client
import json
import secrets
import signal
import statistics
import socket
import sys
import termios
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from harness.processes import Child, wait_for
from slow_clients import raise_open_files_limit

HERE = Path(__file__).resolve().parent
NO_CREATION_LIMITS = {
    "TEMPALIAS_CREATE_RATE_PER_IP": "0",
    "TEMPALIAS_CREATE_DAILY_PER_IP": "0",
    "TEMPALIAS_CREATE_DAILY_PER_TARGET": "0",
}
SLOW_CLIENTS = 3000
ANSWER_WITHIN = 1.0  # seconds: what issue 11 asks for another client while the attack runs
HALF_A_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Waiting: "
HEALTHZ_AND_CLOSE = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def fresh_ip() -> str:
    return f"127.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def connect(service, source: str) -> socket.socket:
    url = urlsplit(service.http_url)
    return socket.create_connection((url.hostname, url.port), timeout=15,
                                    source_address=(source, 0))


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return received
        received += chunk


def raw_exchange(service, source: str, data: bytes) -> tuple[int, dict, bytes]:
    """Send ``data`` as it is; the answer's status, lower-cased headers and body."""
    with connect(service, source) as sock:
        if data:
            sock.sendall(data)
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def get(service, path: str, source: str, method: str = "GET", body: dict | None = None):
    """One request from ``source``; the status, the JSON body and how long the answer took."""
    url = urlsplit(service.http_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=15,
                                            source_address=(source, 0))
    started = time.monotonic()
    try:
        connection.request(method, path, body=json.dumps(body) if body else None,
                           headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        payload = json.loads(answer.read())
        return answer.status, payload, time.monotonic() - started
    finally:
        connection.close()


def assert_json_error(status: int, headers: dict, body: bytes, expected: int, error: str) -> None:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["error"] == error and answer["description"]


class LogSince:
    """What a service logged since this object was made."""

    def __init__(self, service) -> None:
        self.service = service
        self.start = len(service.log_text())

    def lines(self) -> list[str]:
        return self.service.log_text()[self.start:].splitlines()


# --- point 2 of issue 11: slow clients from one address must not deny the service


class SlowClients:
    """tests/slow_clients.py against ``service``, from ``source``, as its own process."""

    def __init__(self, service, source: str, count: int, status: Path) -> None:
        url = urlsplit(service.http_url)
        self.status = status
        self.child = Child("slow-clients", [sys.executable, str(HERE / "slow_clients.py"),
                                            url.hostname, str(url.port), source, str(count),
                                            str(status)], status.parent)
        self.child.start()

    def connections_made(self) -> int:
        return json.loads(self.status.read_text())["connects"] if self.status.exists() else 0

    def running(self) -> bool:
        return self.child.running()

    def stop(self) -> None:
        self.child.stop(timeout=15)


def test_slow_clients_from_one_address_do_not_delay_anyone_else(service_factory, tmp_path):
    raise_open_files_limit(SLOW_CLIENTS + 1000)  # the child inherits it, as a service unit would
    service = service_factory(env=NO_CREATION_LIMITS)  # default HTTP limits: the setting
    attack = SlowClients(service, "127.0.0.2", SLOW_CLIENTS, tmp_path / "slow-clients.json")
    try:
        wait_for(lambda: attack.connections_made() >= SLOW_CLIENTS, 60,
                 f"{SLOW_CLIENTS} slow connections from 127.0.0.2")
        # Within a second, as the issue asks, for the typical answer; the attacker shares this
        # machine's two cores with the service (refused at once, it reconnects at tens of
        # thousands a second), so one answer in five may be late by scheduling, never by much.
        times = []
        for _ in range(5):
            code, body, took = get(service, "/healthz", "127.0.0.3")
            assert (code, body) == (200, {"status": "ok"})
            times.append(took)
        assert statistics.median(times) < ANSWER_WITHIN, f"/healthz took {times} s"
        assert max(times) < 2 * ANSWER_WITHIN, f"/healthz took {times} s during the attack"
        code, body, took = get(service, "/api/v1/aliases", "127.0.0.3", "POST",
                               {"target": f"calm{secrets.token_hex(4)}@example.org", "days": 1})
        assert code == 201, body
        assert took < 2 * ANSWER_WITHIN, f"creating an alias took {took:.2f} s during the attack"
        assert attack.running()  # the attack went on all along
    finally:
        attack.stop()


@pytest.fixture(scope="module")
def capped_service(service_factory):
    return service_factory(env={**NO_CREATION_LIMITS, "TEMPALIAS_HTTP_CONCURRENT_PER_IP": "3",
                                "TEMPALIAS_HTTP_HEADER_TIMEOUT": "60",
                                "TEMPALIAS_TRUSTED_PROXIES": "127.0.0.7/32"})


def hold(stack: contextlib.ExitStack, service, source: str) -> socket.socket:
    """A connection from ``source`` that has sent half a request head, closed with ``stack``."""
    sock = stack.enter_context(connect(service, source))
    sock.sendall(HALF_A_HEAD)
    return sock


def test_open_connections_per_client_are_capped(capped_service):
    client = fresh_ip()
    with contextlib.ExitStack() as stack:
        first = hold(stack, capped_service, client)
        hold(stack, capped_service, client)
        hold(stack, capped_service, client)
        log = LogSince(capped_service)
        for _ in range(5):
            # answered at accept, before any request: sending one could race the close (an
            # unread request makes the kernel reset the connection, answer and all)
            status, headers, body = raw_exchange(capped_service, client, b"")
            assert_json_error(status, headers, body, 429, "too-many-connections")
            assert int(headers["retry-after"]) >= 1
        assert len([line for line in log.lines() if client in line]) == 1  # not one per refusal
        assert get(capped_service, "/healthz", fresh_ip())[0] == 200  # others are not affected
        first.close()
        wait_for(lambda: get(capped_service, "/healthz", client)[0] == 200, 15,
                 "a connection slot to come back when the client closes one")


def test_trusted_networks_and_proxies_are_not_capped_per_address(capped_service):
    for source in ("127.0.0.1", "127.0.0.7"):  # a trusted network; a trusted proxy
        with contextlib.ExitStack() as stack:
            for _ in range(4):
                hold(stack, capped_service, source)
            assert get(capped_service, "/healthz", source)[0] == 200, source


def test_open_connections_in_total_are_capped(service_factory):
    service = service_factory(env={"TEMPALIAS_HTTP_MAX_CONNECTIONS": "4",
                                   "TEMPALIAS_HTTP_HEADER_TIMEOUT": "60"})
    with contextlib.ExitStack() as stack:
        first = hold(stack, service, fresh_ip())
        for _ in range(3):
            hold(stack, service, fresh_ip())
        status, headers, body = raw_exchange(service, "127.0.0.1", b"")  # answered at accept
        assert_json_error(status, headers, body, 503, "too-many-connections")
        assert int(headers["retry-after"]) >= 1
        first.close()
        wait_for(lambda: get(service, "/healthz", fresh_ip())[0] == 200, 15,
                 "a connection slot to come back when a client closes one")


# --- slow clients are cut off (moved here from test_abuse_http.py)


@pytest.fixture(scope="module")
def impatient_service(service_factory):
    return service_factory(env={**NO_CREATION_LIMITS, "TEMPALIAS_HTTP_CLIENT_TIMEOUT": "1",
                                "TEMPALIAS_HTTP_HEADER_TIMEOUT": "1"})


def test_a_client_that_never_finishes_its_headers_is_cut_off(impatient_service):
    with connect(impatient_service, fresh_ip()) as sock:
        sock.sendall(b"POST /api/v1/aliases HTTP/1.1\r\nHost: x\r\n")
        answer = read_until_closed(sock)  # the server closes; recv would time out otherwise
    assert answer.startswith(b"HTTP/1.1 408")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request-timeout"


def test_a_client_that_never_finishes_its_body_gets_408(impatient_service):
    with connect(impatient_service, fresh_ip()) as sock:
        sock.sendall(b"POST /api/v1/aliases HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tar")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"request-timeout"' in answer


def test_an_idle_keep_alive_connection_is_closed(impatient_service):
    with connect(impatient_service, fresh_ip()) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200")


def test_a_request_head_trickling_in_is_cut_off_at_the_header_timeout(service_factory):
    service = service_factory(env={"TEMPALIAS_HTTP_HEADER_TIMEOUT": "1",
                                   "TEMPALIAS_HTTP_CLIENT_TIMEOUT": "60"})
    answer = b""
    with connect(service, fresh_ip()) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Trickle: ")
        sock.settimeout(0.2)  # a byte every 0.2 s: every read makes progress, the head never ends
        deadline = time.monotonic() + 15
        while not answer and time.monotonic() < deadline:
            try:
                answer = sock.recv(4096)
            except TimeoutError:
                sock.sendall(b"x")
    assert answer.startswith(b"HTTP/1.1 408"), "the trickling head was not cut off"


# --- point 7 of issue 11: client errors are 400 in JSON, logged in one line without the request


def test_a_broken_chunked_body_is_400_logged_in_one_line(service):
    target = f"chunked{secrets.token_hex(4)}@example.org"
    first = json.dumps({"target": target, "days": 1}).encode()
    log = LogSince(service)
    status, headers, body = raw_exchange(
        service, "127.0.0.1",
        b"POST /api/v1/aliases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\nnot-a-chunk-size\r\n" % (len(first), first))
    assert_json_error(status, headers, body, 400, "malformed-body")
    lines = log.lines()
    assert len(lines) == 1 and " INFO " in lines[0], lines
    assert target.split("@")[0] not in service.log_text()


def test_a_garbled_request_line_is_400_and_kept_out_of_the_log(service):
    target = f"garbled{secrets.token_hex(4)}%40example.org"
    log = LogSince(service)
    status, headers, body = raw_exchange(
        service, "127.0.0.1",
        f"GET /aliases?callback=cb&target={target} HTTP/1.1 and more\r\nHost: x\r\n\r\n".encode())
    assert_json_error(status, headers, body, 400, "bad-request")
    lines = log.lines()
    assert len(lines) == 1 and " INFO " in lines[0], lines
    assert target.split("%40")[0] not in service.log_text()


# --- drain: SIGTERM lets a request in flight finish and takes no new one


def test_a_request_in_flight_at_sigterm_completes_and_new_ones_are_refused(service_factory):
    service = service_factory()
    body = json.dumps({"target": f"drain{secrets.token_hex(4)}@example.org"}).encode()
    with connect(service, "127.0.0.1") as sock:
        sock.sendall(b"POST /api/v1/aliases HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        # pywsgi says 100 Continue as the handler starts reading the body: it is being served.
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        service.process.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                connect(service, "127.0.0.1").close()
            except ConnectionRefusedError:
                return True
            return False

        wait_for(refused, 15, "the listener to close")
        sock.sendall(body)
        answer = read_until_closed(sock)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201"), answer
    assert json.loads(payload)["address"].endswith("@tempalias.test")
    wait_for(lambda: not service.running(), 30, "the service to exit once drained")
    assert service.stop() == 0  # it exited by itself, with 0


# --- issue 12: one keep-alive connection must not hold the others back


PIPELINED = 3000
NOT_FOUND = b"GET /no-such-page HTTP/1.1\r\nHost: x\r\n\r\n"  # answered without touching Redis


def buffered_bytes(sock: socket.socket) -> int:
    """How many bytes have arrived on ``sock`` and wait to be read (SIOCINQ)."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]


def test_a_pipelining_client_does_not_hold_another_client_back(service):
    """A greenlet that always finds its next request waiting (pipelined, or sent before it reads
    again on a busy machine) used to serve its connection to the end before anyone else got a
    turn: the other client here waited for all 3,000 answers. Now each request after the first
    waits its turn, so the other client's answer comes while most of the 3,000 are still to come."""
    with connect(service, fresh_ip()) as pipelining, connect(service, fresh_ip()) as other:
        pipelining.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        pipelining.sendall(NOT_FOUND * PIPELINED)
        other.sendall(HEALTHZ_AND_CLOSE)
        answer = read_until_closed(other)
        waiting = buffered_bytes(pipelining)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        pipelining.settimeout(30)
        received = b""
        while received.count(b"HTTP/1.1 404") < PIPELINED:  # every pipelined request answered
            chunk = pipelining.recv(1 << 20)
            assert chunk, "the server closed the pipelining connection early"
            received += chunk
        assert waiting < len(received) / 2, f"{waiting} of {len(received)} bytes came first"
