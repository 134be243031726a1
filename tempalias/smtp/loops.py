"""Mail-loop guard: read the header section as it streams past, and say when a message loops.

Two signs, as MTAs use them (RFC 5321 6.3): more ``Received:`` hops than any real path has, and a
``Delivered-To:`` line we wrote ourselves for the same alias (the alias's target forwards back to
it). We write that line (``delivered_to``) only when a message goes to exactly one alias: the line
names the alias, and in a message to several aliases it would tell one alias's owner of the others
(a Bcc). Loops send a message to one alias again and again, so they still meet the line; the hop
count ends everything else.

Only the header section is kept, and only up to ``HEADER_LIMIT``: past that the message is
passed on as it is (its hops counted so far still count).
"""

from __future__ import annotations

MAX_HOPS = 50
HEADER_LIMIT = 256 * 1024


def delivered_to(alias_address: str) -> bytes:
    return f"Delivered-To: {alias_address}\r\n".encode("utf-8")


class LoopGuard:
    """Fed the message's lines (dot-stuffed, from its start); ``loop`` says why it loops."""

    def __init__(self, own_addresses: frozenset[str]) -> None:
        self._own = own_addresses  # lower case: "alias@domain" lines of ours that mean a loop
        self._head = bytearray()
        self.done = False
        self.loop: str | None = None

    def feed(self, lines: bytes) -> str | None:
        """Take more lines; returns the reason once the header section shows a loop."""
        if self.done:
            return self.loop
        start = max(0, len(self._head) - 3)
        self._head += lines
        if self._head.startswith(b"\r\n"):
            end = 0  # no header section at all
        else:
            blank = self._head.find(b"\r\n\r\n", start)
            end = blank + 2 if blank >= 0 else HEADER_LIMIT
            if blank < 0 and len(self._head) < HEADER_LIMIT:
                return None  # the header section goes on
        self.done = True
        head, self._head = bytes(self._head[:end]), bytearray()
        self.loop = self._judge(head)
        return self.loop

    def _judge(self, head: bytes) -> str | None:
        lines = (b"\r\n" + head.lower()).split(b"\r\n")
        hops = sum(1 for line in lines if line.startswith(b"received:"))
        if hops > MAX_HOPS:
            return f"{hops} Received: headers (more than {MAX_HOPS} hops)"
        if self._own:
            for line in lines:
                if line.startswith(b"delivered-to:"):
                    value = line[13:].strip().strip(b"<>").decode("utf-8", "replace")
                    if value in self._own:
                        return "it already went through this alias (Delivered-To:)"
        return None
