"""The load tools of the benchmark, none of them ours: ``wrk`` for HTTP, Postfix's
``smtp-source`` and ``smtp-sink`` for SMTP, a private Postfix as the peer forwarder, and ``py-spy``;
plus the two small clients of our own that no tool replaces (a latency probe that sends one message
at a time, and a holder of idle connections).

Every process started here is stopped on every path; the system's Postfix daemon is never touched:
the Postfix peer is a private instance (its own ``-c`` directory, loopback only).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import selectors
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness.processes import Child, wait_for
from loadtest.stack import DOMAIN
from tempalias.embedded_redis import free_loopback_port

SENDER = "bench@sender.example"
TARGET = "bench-target@example.org"
WRK_CONNECTIONS = 50
FD_LIMIT = 65536

Sample = dict[str, Any]


class ToolFailed(Exception):
    """A load tool failed or did not finish in time."""


def raise_fd_limit(wanted: int = FD_LIMIT) -> int:
    """Children inherit it: tempalias needs one descriptor per held connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, soft), max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_tool(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolFailed(f"{argv[0]} did not finish within {timeout:.0f} s") from exc



# --- HTTP: wrk with a Lua script that reports its figures as one JSON line

WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "socket_errors": %d, "bad_status": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, seconds: int, script: str, workdir: Path, name: str) -> Sample:
    script_path = workdir / f"{name}.lua"
    script_path.write_text(script + WRK_REPORT, encoding="utf-8")
    done = run_tool(["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "-s", str(script_path),
                     url], timeout=seconds + 60)
    match = re.search(r"^WRKJSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not match:
        raise ToolFailed(f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    figures = json.loads(match.group(1))
    return {"req_per_s": figures["requests"] / (figures["duration_us"] / 1e6),
            "p50_ms": figures["p50_us"] / 1000, "p99_ms": figures["p99_us"] / 1000,
            "requests": figures["requests"],
            "errors": figures["socket_errors"] + figures["bad_status"]}


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII is a valid Lua string literal


def create_script() -> str:
    body = json.dumps({"target": TARGET, "days": 1})
    return (f'wrk.method = "POST"\nwrk.body = {lua_string(body)}\n'
            'wrk.headers["Content-Type"] = "application/json"\n')


def lookup_script(aliases: list[dict]) -> str:
    rows = ",\n".join(f'{{{lua_string("/api/v1/aliases/" + a["id"])}, '
                      f'{lua_string("Bearer " + a["token"])}}}' for a in aliases)
    return (f"local aliases = {{\n{rows}\n}}\nlocal i = 0\n"
            "request = function()\n  i = i % #aliases + 1\n"
            '  return wrk.format("GET", aliases[i][1], {["Authorization"] = aliases[i][2]})\nend\n')


def jsonp_script() -> str:
    path = f"/aliases?callback=handleAlias&target={TARGET.replace('@', '%40')}&days=1"
    return f'wrk.path = {lua_string(path)}\n'



# --- SMTP: Postfix's smtp-sink (counting), smtp-source, a private Postfix, a latency probe


class PostfixSink:
    """``smtp-sink -c``: prints its running counters, ``mesg=N`` being the messages it accepted."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_loopback_port()
        self.child = Child("smtp-sink", ["smtp-sink", "-u", "nobody", "-c", "-m", "1000",
                                         f"127.0.0.1:{self.port}", "1024"], workdir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def messages(self) -> int:
        with open(self.child.log_path, "rb") as log:
            log.seek(max(0, os.path.getsize(self.child.log_path) - 256))
            counts = re.findall(rb"mesg=(\d+)", log.read())
        return int(counts[-1]) if counts else 0

    def __enter__(self) -> "PostfixSink":
        if self.child.log_path.exists():
            self.child.log_path.unlink()
        self.child.start()

        def answering() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
                return True
            return False

        wait_for(answering, 10, "smtp-sink to listen")
        return self

    def __exit__(self, *exc_info) -> None:
        self.child.stop()


class PostfixPeer:
    """Postfix as an alias-forwarding relay: a private instance, loopback only, never the system's.

    ``virtual_alias_maps`` holds the same alias as tempalias, ``relayhost`` is the sink; Postfix's
    defaults otherwise (it logs "increase smtp_destination_concurrency_limit" under this load).
    """

    SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

    def __init__(self, workdir: Path, sink_address: str, alias_address: str) -> None:
        self.root = workdir / "postfix"
        self.config_dir = self.root / "conf"
        self.port = free_loopback_port()
        self.sink_address = sink_address
        self.alias_address = alias_address
        self.started = False

    def _configure(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        for sub in ("conf", "queue", "data"):
            (self.root / sub).mkdir(parents=True)
        shutil.chown(self.root / "data", "postfix", "postfix")
        host, port = self.sink_address.rsplit(":", 1)
        (self.config_dir / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.root}/queue
data_directory = {self.root}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix-peer.{DOMAIN}
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [{host}]:{port}
virtual_alias_domains = {DOMAIN}
virtual_alias_maps = hash:{self.config_dir}/virtual
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_dns_support_level = disabled
maillog_file_prefixes = {self.root}
maillog_file = {self.root}/maillog
""", encoding="utf-8")
        (self.config_dir / "master.cf").write_text(
            f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + self.SERVICES, encoding="utf-8")
        (self.config_dir / "virtual").write_text(f"{self.alias_address} {TARGET}\n",
                                                 encoding="utf-8")
        for argv in (["postmap", "-c", str(self.config_dir), f"hash:{self.config_dir}/virtual"],):
            done = run_tool(argv, 60)
            if done.returncode != 0:
                raise ToolFailed(f"{' '.join(argv)}: {done.stderr.strip()}")

    def __enter__(self) -> "PostfixPeer":
        self._configure()
        self.started = True  # from here on, __exit__ must stop it whatever happens
        try:
            done = run_tool(["postfix", "-c", str(self.config_dir), "start"], 60)
            if done.returncode != 0:
                raise ToolFailed(f"postfix start: {done.stdout.strip()} {done.stderr.strip()}")

            def answering() -> bool:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
                    return True
                return False

            wait_for(answering, 30, "the Postfix peer to listen")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.started:
            return
        self.started = False
        done = run_tool(["postfix", "-c", str(self.config_dir), "stop"], 60)
        if done.returncode != 0:
            run_tool(["postfix", "-c", str(self.config_dir), "abort"], 60)


def smtp_source(address: str, recipient: str, messages: int, sessions: int, size: int,
                keep: bool = False) -> float:
    """Send with Postfix's smtp-source: HELO, and a new connection per message as smtp-source
    does by default (how the reference figures of issue 7 were taken), or with ``keep`` (``-d``)
    each session's connection kept for all its messages."""
    started = time.monotonic()
    done = run_tool(["smtp-source", *(["-d"] if keep else []), "-s", str(sessions),
                     "-m", str(messages), "-l", str(size), "-f", SENDER, "-t", recipient, address],
                    timeout=600)
    if done.returncode != 0:
        raise ToolFailed(f"smtp-source: {done.stderr.strip()[-500:]}")
    return time.monotonic() - started



class LatencyProbe:
    """Sends single 2 KiB messages, one at a time, over one connection; times MAIL to the 250."""

    def __init__(self, port: int, recipient: str, interval: float = 0.02) -> None:
        self.port = port
        self.recipient = recipient
        self.interval = interval
        self.samples_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.message = b"Subject: probe\r\n\r\n" + (b"x" * 62 + b"\r\n") * 32  # 2 KiB body

    def _run(self) -> None:
        client: smtplib.SMTP | None = None
        while not self._stop.is_set():
            try:
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", self.port, timeout=30,
                                          local_hostname="probe.bench")
                    client.ehlo()
                started = time.perf_counter()
                client.sendmail(SENDER, [self.recipient], self.message)
                self.samples_ms.append((time.perf_counter() - started) * 1000)
            except (OSError, smtplib.SMTPException):
                self.failures += 1
                if client is not None:
                    client.close()
                client = None
            self._stop.wait(self.interval)
        if client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()
            client.close()

    def __enter__(self) -> "LatencyProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(60)

    def percentiles(self) -> dict[str, float]:
        if len(self.samples_ms) < 2:
            return {"p50_ms": float("nan"), "p99_ms": float("nan"), "samples": len(self.samples_ms)}
        cuts = statistics.quantiles(self.samples_ms, n=100)
        return {"p50_ms": statistics.median(self.samples_ms), "p99_ms": cuts[98],
                "samples": len(self.samples_ms), "failures": self.failures}


# --- idle connections, for the capacity case


def hold_connections(port: int, count: int, held: list[socket.socket], timeout: float = 120) -> int:
    """Open ``count`` more connections and read each one's greeting; returns how many said 220.

    Source addresses rotate over 127.0.0.1-127.0.0.20, so the ephemeral port range of one
    source address is no limit.
    """
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    greeted = 0
    start_index = len(held)
    for index in range(start_index, start_index + count):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            break  # out of descriptors: what is held so far is the answer
        try:
            sock.bind((f"127.0.0.{1 + index % 20}", 0))
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        except OSError:
            sock.close()
            break
        held.append(sock)
        pending[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
        if len(pending) >= 500:  # keep the accept backlog from overflowing
            greeted += _read_greetings(selector, pending, timeout, until=250)
    greeted += _read_greetings(selector, pending, timeout, until=0)
    selector.close()
    return greeted


def _read_greetings(selector, pending: dict, timeout: float, until: int) -> int:
    greeted = 0
    deadline = time.monotonic() + timeout
    while len(pending) > until and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            sock = key.fileobj
            try:
                data = sock.recv(512)
            except OSError:
                data = b""
            pending[sock] += data
            if not data or b"\r\n" in pending[sock]:
                if pending[sock].startswith(b"220"):
                    greeted += 1
                selector.unregister(sock)
                del pending[sock]
    return greeted


# --- profiling (py-spy) of tempalias while a case runs


def profile(pid: int, seconds: int, output: Path) -> list[tuple[str, float]]:
    """Record tempalias with py-spy for ``seconds``; the functions taking most time, inclusive."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(py_spy, os.X_OK):  # the figures measured before must still be reported
        return [(f"py-spy not found (PATH, {py_spy}): `make bench` installs it", 0.0)]
    done = run_tool([py_spy, "record", "--pid", str(pid), "--duration", str(seconds),
                     "--rate", "200", "--format", "raw", "--output", str(output), "--nonblocking"],
                    timeout=seconds + 60)
    if done.returncode != 0 or not output.exists():
        return [("py-spy failed: " + done.stderr.strip()[-300:], 0.0)]
    inclusive: Counter[str] = Counter()
    total = 0
    for line in output.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[re.sub(r"\s*\(.*?([\w/]+\.py):\d+\)", r" (\1)", frame)] += int(count)
    return [(frame, 100.0 * n / max(1, total)) for frame, n in inclusive.most_common(40)]

