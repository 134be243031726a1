"""A real DNS server on a loopback UDP port serving test block lists, for the RBL tests.

Zones (every name under them is answered from the rules below):

- ``bl.test``      lists the IPs in LISTED (A 127.0.0.2, TTL 300); others get NXDOMAIN with an SOA.
- ``codes.test``   answers each IP in CODES with that A record: other 127/8 codes, and addresses
                   outside 127.0.0.0/8, which must not count as a listing.
- ``refuses.test`` answers 127.255.255.254 for everything ("your resolver is blocked").
- ``silent.test``  never answers (a timeout).
- ``broken.test``  answers SERVFAIL.

It counts the queries per name, so a test can tell a cached answer from a fresh look-up.
"""

from __future__ import annotations

import collections
import ipaddress
import socket
import threading

from dnslib import QTYPE, RCODE, RR, SOA, A, DNSRecord

LISTED = ("127.0.0.2", "127.0.0.20", "127.0.0.21", "198.51.100.66", "2001:db8::bad")
CODES = {"127.0.0.30": "127.0.0.10", "127.0.0.31": "10.0.0.2", "127.0.0.32": "127.255.255.253"}
ZONES = ("bl.test", "codes.test", "refuses.test", "silent.test", "broken.test")


def _ip_of(labels: list[str]) -> str | None:
    """The IP whose reversed octets or nibbles ``labels`` are (the zone already removed)."""
    if len(labels) == 4:
        return ".".join(reversed(labels))
    if len(labels) == 32:
        nibbles = "".join(reversed(labels))
        return str(ipaddress.ip_address(":".join(nibbles[i:i + 4] for i in range(0, 32, 4))))
    return None


class TestDnsServer:
    __test__ = False  # not a test class, whatever its name says

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.queries: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    def start(self) -> "TestDnsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                query = DNSRecord.parse(data)
            except Exception:  # noqa: BLE001 - junk on the wire is ignored, like a real server
                continue
            reply = self._answer(query)
            if reply is not None:
                self.sock.sendto(reply.pack(), peer)

    def _answer(self, query: DNSRecord) -> DNSRecord | None:
        name = str(query.q.qname).rstrip(".").lower()
        self.queries[name] += 1
        zone = next((z for z in ZONES if name.endswith("." + z)), None)
        reply = query.reply()
        if zone is None:
            reply.header.rcode = RCODE.REFUSED
            return reply
        if zone == "silent.test":
            return None
        if zone == "broken.test":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        ip = _ip_of(name[: -len(zone) - 1].split("."))
        if zone == "refuses.test":
            code = "127.255.255.254"
        elif zone == "codes.test":
            code = CODES.get(ip or "")
        else:
            code = "127.0.0.2" if ip in LISTED else None
        if code is None:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(RR(zone, QTYPE.SOA, ttl=60,
                              rdata=SOA(f"ns.{zone}", f"hostmaster.{zone}", (1, 60, 60, 600, 60))))
        elif query.q.qtype == QTYPE.A:
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(code), ttl=300))
        return reply
