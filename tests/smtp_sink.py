"""Real SMTP peers for the proxy's tests, running in threads of the test process.

``SmtpSink`` is an aiosmtpd server standing in for the smarthost: it records every connection and
every message it accepted, and can be told to refuse recipients, answer 4xx/5xx at the end of
DATA, hold its answer until the test releases it, or drop the connection instead of answering.
``DroppingSmarthost`` is a hand-written peer that hangs up in the middle of the message body,
which aiosmtpd (it reads the whole message before calling us) cannot do.
"""

from __future__ import annotations

import asyncio
import select
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from tempalias.embedded_redis import free_loopback_port

def make_certificate(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made with the openssl command for this test run."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={common_name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


HOLD_LIMIT = 60.0  # a held answer is given at the latest after this, so no test can hang on it


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    queue_id: str
    tls: bool = False  # whether it came over STARTTLS

    def body_after_received(self) -> bytes:
        """The message minus the Received: header tempalias put in front (three lines) and the
        Delivered-To: line it adds after it for a message to one alias."""
        assert self.content.startswith(b"Received: "), self.content[:80]
        rest = self.content.split(b"\r\n", 3)[3]
        if rest.startswith(b"Delivered-To: "):
            rest = rest.split(b"\r\n", 1)[1]
        return rest


@dataclass
class SinkState:
    connections: int = 0
    quits: int = 0  # sessions ended by the client's QUIT
    resets: int = 0  # RSET commands
    messages: list[ReceivedMessage] = field(default_factory=list)
    data_mode: str = "accept"  # accept | tempfail | permfail | hold | drop
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> full reply line
    held: list[ReceivedMessage] = field(default_factory=list)


class _Handler:
    def __init__(self, sink: "SmtpSink") -> None:
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.sink.pipelining:  # aiosmtpd handles pipelined commands but does not say so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RSET(self, server, session, envelope):
        with self.sink.lock:
            self.sink.state.resets += 1
        return "250 2.0.0 reset"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal = self.sink.state.refuse_rcpt.get(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_QUIT(self, server, session, envelope):
        with self.sink.lock:
            self.sink.state.quits += 1
        return "221 2.0.0 bye"

    async def handle_DATA(self, server, session, envelope):
        sink = self.sink
        with sink.lock:
            sink.queue_counter += 1
            queue_id = f"SINK{sink.queue_counter:05d}"
        message = ReceivedMessage(envelope.mail_from, list(envelope.rcpt_tos),
                                  bytes(envelope.content), list(envelope.mail_options), queue_id,
                                  tls=session.ssl is not None)
        mode = sink.state.data_mode
        if mode == "tempfail":
            return "451 4.3.0 sink says try later"
        if mode == "permfail":
            return "554 5.7.1 sink refuses this message for <secret-target@example.org>"
        if mode == "drop":
            server.transport.close()
            return "421 4.3.0 dropping"  # never reaches the client: the transport is closed
        if mode == "hold":
            with sink.lock:
                sink.state.held.append(message)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sink.release.wait, HOLD_LIMIT)
            if server.transport is None or server.transport.is_closing():
                return "451 4.3.0 the client left"  # modelled as not committed: nothing kept
            if not sink.release.is_set():
                return "451 4.3.0 held too long"
        with sink.lock:
            sink.state.messages.append(message)
        return f"250 2.0.0 Ok: queued as {queue_id}"


class _CountingSMTP(SMTP):
    def connection_made(self, transport):
        with self.__class__.sink.lock:
            self.__class__.sink.state.connections += 1
        super().connection_made(transport)


class _Controller(Controller):
    def __init__(self, sink: "SmtpSink", **kwargs) -> None:
        self.sink = sink
        super().__init__(_Handler(sink), **kwargs)

    def factory(self):
        counting = type("CountingSMTP", (_CountingSMTP,), {"sink": self.sink})
        return counting(self.handler, **self.SMTP_kwargs)


class SmtpSink:
    """``smtp_options`` go to aiosmtpd's SMTP (e.g. ``tls_context`` to offer STARTTLS, or
    ``timeout`` to close idle connections sooner). It offers PIPELINING, as real smarthosts do,
    unless ``pipelining=False``."""

    def __init__(self, pipelining: bool = True, **smtp_options) -> None:
        self.pipelining = pipelining
        self.port = free_loopback_port()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.queue_counter = 0
        self.state = SinkState()
        self.controller = _Controller(self, hostname="127.0.0.1", port=self.port,
                                      enable_SMTPUTF8=True, decode_data=False,
                                      data_size_limit=64 * 1024 * 1024, ready_timeout=10.0,
                                      **smtp_options)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "SmtpSink":
        self.controller.start()
        # Controller.start probes the server once with a connection of its own: not a client's.
        with self.lock:
            self.state.connections = 0
        return self

    def stop(self) -> None:
        self.release.set()
        self.controller.stop()

    def reset(self) -> None:
        self.release.set()  # let anything held from an earlier test finish first
        with self.lock:
            self.state = SinkState()
        self.release = threading.Event()

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


class _ScriptedSmarthost:
    """A smarthost written out by hand, for what a real one will not do on request: one thread
    serving one connection at a time with ``_one``."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                try:
                    self._one(conn)
                except OSError:
                    pass

    def _one(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.listener.close()
        self.thread.join(5)


class DroppingSmarthost(_ScriptedSmarthost):
    """Accepts one envelope, reads ``drop_after`` bytes of the message, then hangs up."""

    def __init__(self, drop_after: int = 200) -> None:
        super().__init__()
        self.drop_after = drop_after
        self.bytes_before_drop: list[int] = []

    def _one(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        conn.sendall(b"220 dropper ESMTP\r\n")
        while True:
            line = reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-dropper\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                received = len(reader.read(self.drop_after))
                self.bytes_before_drop.append(received)
                conn.shutdown(socket.SHUT_RDWR)
                return
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 OK\r\n")


class BatchRecordingSmarthost(_ScriptedSmarthost):
    """A smarthost offering PIPELINING that notes which commands reach it together.

    Before it answers a command it waits up to ``patience`` seconds for the next one, so a client
    that pipelines shows its commands in one batch, and one that waits for each answer shows them
    one at a time. ``batches`` holds the verbs of each batch up to DATA.
    """

    def __init__(self, patience: float = 2.0, data_answer: bytes = b"354 go ahead") -> None:
        super().__init__()
        self.patience = patience
        self.data_answer = data_answer  # anything but a 354 refuses the DATA command itself
        self.batches: list[list[str]] = []
        self.messages = 0

    def _one(self, conn: socket.socket) -> None:
        conn.sendall(b"220 recorder ESMTP\r\n")
        buffer = b""
        while True:
            while b"\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            verb = buffer[:4].upper()
            if verb in (b"RSET", b"MAIL") and b"RCPT" not in buffer.upper():
                ready, _, _ = select.select([conn], [], [], self.patience)
                if ready:
                    buffer += conn.recv(65536)
            lines = buffer.split(b"\r\n")
            buffer = lines.pop()
            verbs = [line[:4].decode("ascii", "replace").upper() for line in lines]
            if verbs[0] in ("RSET", "MAIL", "RCPT"):
                self.batches.append(verbs)
            answers = []
            for verb in verbs:
                if verb == "EHLO":
                    answers.append(b"250-recorder\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == "DATA":
                    answers.append(self.data_answer + b"\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    answers.append(b"250 OK\r\n")
            conn.sendall(b"".join(answers))
            if verbs[-1] == "DATA" and self.data_answer.startswith(b"354"):
                while b"\r\n.\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer.split(b"\r\n.\r\n", 1)[1]
                self.messages += 1
                conn.sendall(f"250 OK queued as REC{self.messages}\r\n".encode())


class RawClient:
    """SMTP at the byte level, for what smtplib will not send: pipelined batches, bad line ends,
    over-long lines, a hang-up in the middle of a message."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

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
