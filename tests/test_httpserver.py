"""The HTTP server of a running tempalias (tempalias/httpserver.py), seen from its clients."""

from __future__ import annotations

import json
import secrets
import socket
from urllib.parse import urlsplit


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
        sock.sendall(data)
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


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
