"""A real DNS server on a loopback UDP port: test block lists, and a zone each test writes.

Block-list zones, for the RBL tests (every name under them is answered from the rules below):

- ``bl.test``      lists the IPs in LISTED (A 127.0.0.2, TTL 300); others get NXDOMAIN with an SOA.
- ``codes.test``   answers each IP in CODES with that A record: other 127/8 codes, and addresses
                   outside 127.0.0.0/8, which must not count as a listing.
- ``refuses.test`` answers 127.255.255.254 for everything ("your resolver is blocked").
- ``silent.test``  never answers (a timeout).
- ``broken.test``  answers SERVFAIL.

Every other name is in the test's own zone, which starts empty and holds what a test puts there
while it runs (the custom-domain tests publish and withdraw MX and TXT records):

- ``set_records(name, "MX", ["10 mx.tempalias.test"])`` replaces the records of one type at a
  name (types MX, TXT, CNAME, A, AAAA; an empty list removes them). A TXT record is given as one
  string, or as a list of strings for a record of several character-strings.
- ``publish('name. IN TXT "v=DKIM1; ..." "..."')`` does the same with one zone-file line, as an
  operator pastes what ``tempalias dns-records`` prints (MX and TXT).
- ``fail(name, "timeout")`` makes a name silent, ``fail(name, "servfail")`` answers SERVFAIL.
- ``clear_records(name)`` forgets a name's records and failure; ``reset()`` empties the zone
  and the query counts.

It answers like an authoritative server behind a recursive one: a CNAME is followed inside the
zone, a name without records is NXDOMAIN and a name that exists with other types (or only has names
below it) is NODATA, both with the SOA of its zone (the name's last two labels) in authority.

It counts the queries per name, so a test can tell a cached answer from a fresh look-up.
"""

from __future__ import annotations

import collections
import ipaddress
import re
import socket
import threading

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

LISTED = ("127.0.0.2", "127.0.0.20", "127.0.0.21", "198.51.100.66", "2001:db8::bad")
CODES = {"127.0.0.30": "127.0.0.10", "127.0.0.31": "10.0.0.2", "127.0.0.32": "127.255.255.253"}
ZONES = ("bl.test", "codes.test", "refuses.test", "silent.test", "broken.test")
FAILURES = ("timeout", "servfail")
TEST_ZONE_TTL = 60
CNAME_HOPS = 8
_ZONE_LINE = re.compile(r"^(\S+?)\.?\s+(?:\d+\s+)?IN\s+(MX|TXT)\s+(.+)$")
_TXT_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _rdata(rtype: str, value: str | list[str]):
    """dnslib's record data for a value written as it goes into a zone file (TXT: its strings)."""
    if rtype == "TXT":
        strings = [value] if isinstance(value, str) else list(value)
        if any(len(string.encode()) > 255 for string in strings):
            raise ValueError("a TXT string holds at most 255 bytes: give a longer one as a list")
        return TXT(strings)
    if rtype == "MX":
        preference, exchange = value.split()
        return MX(exchange, int(preference))
    makers = {"CNAME": CNAME, "A": A, "AAAA": AAAA}
    if rtype not in makers:
        raise ValueError(f"the test zone holds MX, TXT, CNAME, A and AAAA records, not {rtype}")
    return makers[rtype](value)


def _soa(name: str) -> RR:
    zone = ".".join(name.split(".")[-2:])
    return RR(zone, QTYPE.SOA, ttl=TEST_ZONE_TTL,
              rdata=SOA(f"ns.{zone}", f"hostmaster.{zone}", (1, 60, 60, 600, 60)))


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
        self._records: dict[str, dict[str, list]] = {}  # the test's zone: name -> type -> rdata
        self._failures: dict[str, str] = {}
        self._lock = threading.Lock()
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

    def set_records(self, name: str, rtype: str, values: list) -> None:
        """Publish ``values`` as the ``rtype`` records of ``name`` in place of those before."""
        name, rtype = _key(name), rtype.upper()
        rdatas = [_rdata(rtype, value) for value in values]
        with self._lock:
            types = self._records.setdefault(name, {})
            if rdatas:
                types[rtype] = rdatas
            else:
                types.pop(rtype, None)
            if not types:
                del self._records[name]

    def publish(self, zone_line: str) -> None:
        """Publish one zone-file line (``NAME. IN MX 10 HOST.`` or ``NAME. IN TXT "..." ...``)
        in place of the records of its name and type."""
        match = _ZONE_LINE.match(zone_line.strip())
        if match is None:
            raise ValueError(f"not a zone-file line of an MX or TXT record: {zone_line!r}")
        name, rtype, value = match.groups()
        if rtype == "TXT":
            strings = [re.sub(r"\\(.)", r"\1", text) for text in _TXT_STRING.findall(value)]
            self.set_records(name, rtype, [strings])
        else:
            preference, host = value.split()
            self.set_records(name, rtype, [f"{preference} {host}"])

    def clear_records(self, name: str) -> None:
        """Withdraw every record of ``name`` and any failure set on it."""
        with self._lock:
            self._records.pop(_key(name), None)
            self._failures.pop(_key(name), None)

    def fail(self, name: str, how: str) -> None:
        """Make look-ups of ``name`` time out (no answer at all) or answer SERVFAIL."""
        if how not in FAILURES:
            raise ValueError(f"a name fails by one of {FAILURES}, not {how!r}")
        with self._lock:
            self._failures[_key(name)] = how

    def reset(self) -> None:
        """Empty the test's zone and forget the queries counted (the block lists stay)."""
        with self._lock:
            self._records.clear()
            self._failures.clear()
        self.queries.clear()

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
            return self._answer_from_test_zone(name, reply)
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

    def _answer_from_test_zone(self, name: str, reply: DNSRecord) -> DNSRecord | None:
        with self._lock:
            failure = self._failures.get(name)
            records = {owner: dict(types) for owner, types in self._records.items()}
        if failure == "timeout":
            return None
        if failure == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        qtype = QTYPE[reply.q.qtype]
        for _ in range(CNAME_HOPS):  # a resolver follows a CNAME to its target for us
            target = records.get(name, {}).get("CNAME")
            if not target or qtype == "CNAME":
                break
            reply.add_answer(RR(name, QTYPE.CNAME, rdata=target[0], ttl=TEST_ZONE_TTL))
            name = str(target[0].label).rstrip(".").lower()
        if qtype in records.get(name, {}):
            for rdata in records[name][qtype]:
                reply.add_answer(RR(name, getattr(QTYPE, qtype), rdata=rdata, ttl=TEST_ZONE_TTL))
            return reply
        exists = name in records or any(owner.endswith("." + name) for owner in records)
        if not exists:
            reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(_soa(name))
        return reply


def _key(name: str) -> str:
    return name.rstrip(".").lower()
