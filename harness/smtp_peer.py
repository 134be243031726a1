"""The one SMTP peer of the tests and the load test, and a byte-level SMTP client.

``SmtpPeer`` stands in for the smarthost. By default it is a sink: it accepts every message and
keeps it (or, for the load test, only counts it). Its ``script`` makes it misbehave on request,
the way real smarthosts do now and then: refuse a recipient or every recipient, refuse DATA,
answer the final dot with a 4xx or 5xx, hold that answer until the test releases it, hang up in
the middle of a message, or leave out an extension (PIPELINING, SMTPUTF8). It can offer STARTTLS
and require AUTH PLAIN, and it records which commands reached it together (``batches``), so that
a test can tell a pipelining client from one that waits for each answer.

One thread per connection, on blocking sockets. In a process that ran gevent's
``monkey.patch_all()`` first (``python -m harness.smtp_peer``, the load test's sink) those
threads are greenlets, and one process keeps up with thousands of connections.

Like a real server it closes the connection after any 421 it gives.
"""

from __future__ import annotations

if __name__ == "__main__":  # the load test's sink: before anything else, so threads are greenlets
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

HOLD_LIMIT = 60.0  # a held answer is given at the latest after this, so no test can hang on it
IDLE_TIMEOUT = 300.0  # as RFC 5321 4.5.3.2.7 asks of a server
COMMAND_LIMIT = 4096
MAX_MESSAGE = 64 * 1024 * 1024
RECV_SIZE = 65536
# Commands a pipelining client may send more of before it needs their answer (RFC 2920).
PIPELINED_SO_FAR = (b"MAIL", b"RSET")
RECORDED_BATCHES = ("RSET", "MAIL", "RCPT")  # a batch starting so is part of an envelope


def make_certificate(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made with the openssl command for this test run."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={common_name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


SEAL_FIELDS = (b"arc-seal:", b"arc-message-signature:", b"arc-authentication-results:",
               b"authentication-results:")


@dataclass
class ReceivedMessage:
    mail_from: str  # "<>" for the null sender
    rcpt_tos: list[str]
    content: bytes  # as sent, dot-stuffing undone, without the final dot
    mail_options: list[str]
    queue_id: str
    tls: bool = False  # whether it came over STARTTLS

    def unsealed(self) -> bytes:
        """The message without the fields an ARC-sealing tempalias puts in front of it (its seal,
        ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results, and its
        Authentication-Results), each with its continuation lines."""
        content = self.content
        while content.lower().startswith(SEAL_FIELDS):
            end = content.find(b"\r\n")
            while content[end + 2:end + 3] in (b" ", b"\t"):
                end = content.find(b"\r\n", end + 2)
            content = content[end + 2:]
        return content

    def body_after_received(self) -> bytes:
        """The message minus the seal (``unsealed``), the Received: header tempalias put in front
        (three lines) and the Delivered-To: line it adds after it for a message to one alias."""
        content = self.unsealed()
        assert content.startswith(b"Received: "), content[:80]
        rest = content.split(b"\r\n", 3)[3]
        if rest.startswith(b"Delivered-To: "):
            rest = rest.split(b"\r\n", 1)[1]
        return rest


@dataclass
class Script:
    """How the peer departs from a plain sink; a test sets it up before it sends.

    ``rcpt``: recipient -> the whole reply line it gets instead of 250. ``replies``: verb -> the
    reply every such command gets instead of the usual ("RCPT" for every recipient, "DATA" to
    refuse the DATA command itself). ``message``: the answer to the final dot instead of 250.
    ``hold``: that answer waits for ``SmtpPeer.release`` (at most HOLD_LIMIT s). ``drop``: hang up
    at the final dot instead of answering. ``drop_after``: hang up once that many bytes of the
    message have come.
    """

    rcpt: dict[str, str] = field(default_factory=dict)
    replies: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    hold: bool = False
    drop: bool = False
    drop_after: int | None = None


@dataclass
class PeerState:
    connections: int = 0
    quits: int = 0  # sessions ended by the client's QUIT
    resets: int = 0  # RSET commands
    accepted: int = 0  # messages answered 250, kept or not
    messages: list[ReceivedMessage] = field(default_factory=list)
    held: list[ReceivedMessage] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)
    bytes_before_drop: list[int] = field(default_factory=list)


class _Hangup(Exception):
    """The client went away, or we hang up on it."""


class SmtpPeer:
    """An SMTP server on a loopback port the kernel picks (or ``port``).

    ``keep``: keep every accepted message (else only count it). ``pipelining``, ``smtputf8``:
    offer those extensions. ``tls_context``: offer STARTTLS. ``login``: (user, password) that
    AUTH PLAIN accepts, and then no mail is taken before AUTH. ``idle_timeout``: seconds a
    connection may idle before the peer hangs up (with a 421). ``patience``: seconds the peer waits
    for more commands after a MAIL or RSET before it answers, so that commands a client pipelines
    show in one batch even if they arrive in two writes.
    """

    def __init__(self, port: int = 0, keep: bool = True, pipelining: bool = True,
                 smtputf8: bool = True, tls_context: ssl.SSLContext | None = None,
                 login: tuple[str, str] | None = None, idle_timeout: float = IDLE_TIMEOUT,
                 patience: float = 0.0, name: str = "sink.test") -> None:
        self.keep = keep
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.tls_context = tls_context
        self.login = login
        self.idle_timeout = idle_timeout
        self.patience = patience
        self.name = name
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.script = Script()
        self.state = PeerState()
        self._queue_counter = 0
        self._open: set[socket.socket] = set()
        self.listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.port = self.listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name="smtp-peer")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "SmtpPeer":
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self.release.set()
        _shutdown(self.listener)  # shutdown, not just close, wakes the thread blocked in accept
        with self.lock:
            for conn in list(self._open):
                _shutdown(conn)
        self._acceptor.join(5)

    def reset(self) -> None:
        """Forget what was received and scripted (a test's start); anything held is let go."""
        self.release.set()
        with self.lock:
            self.state = PeerState()
            self.script = Script()
        self.release = threading.Event()

    # --- what it saw

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self.lock:
            return list(self.state.messages)

    @property
    def connections(self) -> int:
        with self.lock:
            return self.state.connections

    @property
    def quits(self) -> int:
        with self.lock:
            return self.state.quits

    @property
    def resets(self) -> int:
        with self.lock:
            return self.state.resets

    @property
    def accepted(self) -> int:
        with self.lock:
            return self.state.accepted

    @property
    def batches(self) -> list[list[str]]:
        with self.lock:
            return [list(batch) for batch in self.state.batches]

    @property
    def bytes_before_drop(self) -> list[int]:
        with self.lock:
            return list(self.state.bytes_before_drop)

    # --- serving

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed: stop
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.state.connections += 1
                self._open.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        session = _Session(self, conn)
        try:
            session.run()
        except (_Hangup, OSError, ssl.SSLError):
            pass
        finally:
            with self.lock:
                self._open.discard(conn)
            _shutdown(session.sock)

    def _next_queue_id(self) -> str:
        with self.lock:
            self._queue_counter += 1
            return f"SINK{self._queue_counter:05d}"


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Session:
    """One connection: read what has come, answer it in one write, and so on (RFC 2920)."""

    def __init__(self, peer: SmtpPeer, sock: socket.socket) -> None:
        self.peer = peer
        self.sock = sock
        self.sock.settimeout(peer.idle_timeout)
        self.buffer = bytearray()
        self.answers: list[bytes] = []
        self.batch: list[str] = []
        self.tls = False
        self.authenticated = False
        self._new_envelope()

    def _new_envelope(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.rcpt_tos: list[str] = []

    # --- input and output

    def _fill(self) -> None:
        self._flush()
        try:
            data = self.sock.recv(RECV_SIZE)
        except socket.timeout:
            self._say("421 4.4.2 idle for too long, closing")
            raise _Hangup() from None
        if not data:
            raise _Hangup()
        self.buffer += data

    def _more_within(self, seconds: float) -> None:
        """Whatever else arrives within ``seconds``, added to the buffer without answering."""
        if select.select([self.sock], [], [], seconds)[0]:
            data = self.sock.recv(RECV_SIZE)
            if data:
                self.buffer += data

    def readline(self) -> bytes:
        scanned = 0
        while (end := self.buffer.find(b"\n", scanned)) < 0:
            scanned = len(self.buffer)
            if scanned > COMMAND_LIMIT:
                raise _Hangup()
            self._fill()
        line = bytes(self.buffer[:end + 1])
        del self.buffer[:end + 1]
        return line

    def _answer(self, line: str) -> None:
        """Queue a reply; it goes out with the others of its batch. A 421 ends the session."""
        self.answers.append(line.encode("utf-8") + b"\r\n")
        if line.startswith("421"):
            self._flush()
            raise _Hangup()

    def _say(self, line: str) -> None:
        self.answers.append(line.encode("utf-8") + b"\r\n")
        self._flush()

    def _flush(self) -> None:
        if self.batch:
            if self.batch[0] in RECORDED_BATCHES:
                with self.peer.lock:
                    self.peer.state.batches.append(self.batch)
            self.batch = []
        if self.answers:
            data, self.answers = b"".join(self.answers), []
            self.sock.sendall(data)

    # --- the conversation

    def run(self) -> None:
        self._say(f"220 {self.peer.name} ESMTP test peer")
        while True:
            line = self.readline()
            if line[:4].upper() in PIPELINED_SO_FAR and self.peer.patience \
                    and b"\n" not in self.buffer:
                self._more_within(self.peer.patience)
            word, _, argument = line.rstrip(b"\r\n").partition(b" ")
            verb = word.decode("ascii", "replace").upper()
            self.batch.append(verb)
            scripted = self.peer.script.replies.get(verb)
            handler = getattr(self, "_" + verb.lower(), None) if verb.isalpha() else None
            if scripted and verb not in ("EHLO", "HELO", "QUIT"):
                self._answer(scripted)
            elif handler is None:
                self._answer("500 5.5.1 command not recognised")
            else:
                handler(argument.strip())

    def _ehlo(self, argument: bytes) -> None:
        lines = [self.peer.name, "8BITMIME", f"SIZE {MAX_MESSAGE}", "ENHANCEDSTATUSCODES"]
        if self.peer.pipelining:
            lines.append("PIPELINING")
        if self.peer.smtputf8:
            lines.append("SMTPUTF8")
        if self.peer.tls_context is not None and not self.tls:
            lines.append("STARTTLS")
        if self.peer.login is not None:
            lines.append("AUTH PLAIN")
        self._answer("\r\n".join(f"250-{text}" for text in lines[:-1]) + f"\r\n250 {lines[-1]}")

    def _helo(self, argument: bytes) -> None:
        self._answer(f"250 {self.peer.name}")

    def _starttls(self, argument: bytes) -> None:
        if self.peer.tls_context is None or self.tls:
            return self._answer("502 5.5.1 no TLS here")
        self._say("220 2.0.0 ready to start TLS")
        self.buffer = bytearray()  # anything sent before the handshake is not to be trusted
        self.sock = self.peer.tls_context.wrap_socket(self.sock, server_side=True)
        self.tls = True
        self._new_envelope()

    def _auth(self, argument: bytes) -> None:
        mechanism, _, response = argument.partition(b" ")
        if self.peer.login is None or mechanism.upper() != b"PLAIN":
            return self._answer("504 5.5.4 mechanism not supported")
        if not response:
            self._say("334 ")
            response = self.readline().strip()
        try:
            _, user, password = base64.b64decode(response, validate=True).split(b"\0")
        except ValueError:
            return self._answer("501 5.5.2 cannot decode the response")
        if (user.decode("utf-8", "replace"), password.decode("utf-8", "replace")) != self.peer.login:
            return self._answer("535 5.7.8 authentication credentials invalid")
        self.authenticated = True
        self._answer("235 2.7.0 authentication successful")

    def _mail(self, argument: bytes) -> None:
        if self.peer.login is not None and not self.authenticated:
            return self._answer("530 5.7.0 authentication required")
        if not argument.upper().startswith(b"FROM:"):
            return self._answer("501 5.5.4 syntax: MAIL FROM:<address>")
        address, options = _path_and_options(argument[5:])
        if "SMTPUTF8" in (o.upper() for o in options) and not self.peer.smtputf8:
            return self._answer("555 5.5.4 SMTPUTF8 is not offered here")
        self._new_envelope()
        self.mail_from = address or "<>"
        self.mail_options = options
        self._answer("250 2.1.0 OK")

    def _rcpt(self, argument: bytes) -> None:
        if self.mail_from is None:
            return self._answer("503 5.5.1 MAIL first")
        if not argument.upper().startswith(b"TO:"):
            return self._answer("501 5.5.4 syntax: RCPT TO:<address>")
        address, _ = _path_and_options(argument[3:])
        refusal = self.peer.script.rcpt.get(address)
        if refusal:
            return self._answer(refusal)
        self.rcpt_tos.append(address)
        self._answer("250 2.1.5 OK")

    def _rset(self, argument: bytes) -> None:
        with self.peer.lock:
            self.peer.state.resets += 1
        self._new_envelope()
        self._answer("250 2.0.0 reset")

    def _noop(self, argument: bytes) -> None:
        self._answer("250 2.0.0 OK")

    def _quit(self, argument: bytes) -> None:
        with self.peer.lock:
            self.peer.state.quits += 1
        self._say("221 2.0.0 bye")
        raise _Hangup()

    def _data(self, argument: bytes) -> None:
        if not self.rcpt_tos:
            return self._answer("554 5.5.1 no valid recipients")
        self._say("354 go ahead")
        script = self.peer.script
        if script.drop_after is not None:
            return self._drop_after(script.drop_after)
        content = self._read_message()
        message = ReceivedMessage(self.mail_from, self.rcpt_tos, content, self.mail_options,
                                  self.peer._next_queue_id(), self.tls)
        self._new_envelope()
        if script.drop:
            raise _Hangup()
        if script.hold:
            with self.peer.lock:
                self.peer.state.held.append(message)
            released = self.peer.release.wait(HOLD_LIMIT)
            if self._client_left():
                raise _Hangup()  # modelled as not committed: nothing kept
            if not released:
                return self._answer("451 4.3.0 held too long")
        if script.message is not None:
            return self._answer(script.message)
        with self.peer.lock:
            self.peer.state.accepted += 1
            if self.peer.keep:
                self.peer.state.messages.append(message)
        self._answer(f"250 2.0.0 Ok: queued as {message.queue_id}")

    def _read_message(self) -> bytes:
        """Up to the final dot, with dot-stuffing undone (RFC 5321 4.5.2)."""
        if self.buffer.startswith(b".\r\n"):
            del self.buffer[:3]
            return b""
        scanned = 0
        while (end := self.buffer.find(b"\r\n.\r\n", max(0, scanned - 4))) < 0:
            scanned = len(self.buffer)
            if scanned > MAX_MESSAGE:
                raise _Hangup()
            self._fill()
        raw = bytes(self.buffer[:end + 2])
        del self.buffer[:end + 5]
        if not self.peer.keep:
            return b""
        return (raw[1:] if raw.startswith(b".") else raw).replace(b"\r\n.", b"\r\n")

    def _drop_after(self, count: int) -> None:
        while len(self.buffer) < count:
            try:
                self._fill()
            except _Hangup:
                break
        with self.peer.lock:
            self.peer.state.bytes_before_drop.append(min(count, len(self.buffer)))
        raise _Hangup()

    def _client_left(self) -> bool:
        if isinstance(self.sock, ssl.SSLSocket):
            return False  # no peeking through TLS; no test holds a message sent over it
        try:
            readable = select.select([self.sock], [], [], 0)[0]
            return bool(readable) and self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


def _path_and_options(rest: bytes) -> tuple[str, list[str]]:
    """``<address> OPTION...`` -> the address (without brackets) and the options."""
    text = rest.decode("utf-8", "replace").strip()
    if text.startswith("<") and ">" in text:
        address, _, options = text[1:].partition(">")
    else:
        address, _, options = text.partition(" ")
    return address, options.split()


class RawClient:
    """SMTP at the byte level, for what smtplib will not send: pipelined batches, bad line ends,
    over-long lines, a hang-up in the middle of a message."""

    def __init__(self, port: int, timeout: float = 30.0, source: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.reader = self.sock.makefile("rb")

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """One whole (possibly multi-line) reply: its code and its text lines joined by \\n."""
        texts = []
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            texts.append(line[4:].decode("utf-8").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(texts)

    def at_eof(self) -> bool:
        return self.reader.read(1) == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --- as a process of its own: the load test's sink


def main() -> int:
    parser = argparse.ArgumentParser(
        description="A counting SMTP sink: the smarthost of the load test's throwaway stack.")
    parser.add_argument("--ready-file", required=True, help="write {pid, port} here once listening")
    parser.add_argument("--status-file", required=True,
                        help="on SIGTERM or SIGINT, write {messages, connections} here and exit")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import gevent  # this process was monkey-patched at the top of the module

    peer = SmtpPeer(args.port, keep=False, idle_timeout=60.0, name="sink.loadtest").start()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stopping.set)
    temporary = args.ready_file + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), "port": peer.port}, handle)
    os.replace(temporary, args.ready_file)
    stopping.wait()
    peer.stop()
    with open(args.status_file, "w", encoding="utf-8") as handle:
        json.dump({"messages": peer.accepted, "connections": peer.connections}, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
