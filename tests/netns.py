"""Network namespaces of the tests' own: a network stack with nothing in it but what a test puts
there, so that a test may change what only root may change (a sysctl, firewall rules, links
between two machines) without touching the host's.

A namespace lives as long as the process holding it (``unshare --net``); commands run in it
through ``nsenter``. Needs root; ``available()`` says whether this machine allows it.

Run as a script, ``netns.py first-line HOST PORT [REQUEST]`` connects, sends REQUEST (``\\r\\n``
escapes allowed) and prints the first line it is answered, or ``error: ...``: the probe a test
runs inside a namespace.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

TIMEOUT = 30.0


def has_ipv6_loopback() -> bool:
    """Whether this machine (this namespace) has ::1."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def available() -> bool:
    if os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "nsenter", "ip"))):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True,
                          timeout=TIMEOUT, check=False).returncode == 0


class NetNamespace:
    """A fresh network namespace with its loopback interface up."""

    def __init__(self) -> None:
        # Imported here: this module also runs as a script inside a namespace (``first_line``),
        # where only the tests' folder is on the path.
        from harness.processes import wait_for

        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"],
                                       stdin=subprocess.DEVNULL)
        self.prefix = ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--"]
        try:
            # Until unshare(2) ran, the holder is still in our namespace: entering it then would
            # change the host's network (its sysctls, its firewall) instead of a fresh one.
            wait_for(self._unshared, TIMEOUT, "the namespace holder to unshare")
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def _unshared(self) -> bool:
        try:
            return os.readlink(f"/proc/{self.holder.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        except FileNotFoundError:
            raise AssertionError("the namespace holder exited") from None

    def run(self, *command: str) -> str:
        """Runs ``command`` in the namespace; its output, or AssertionError when it fails."""
        result = subprocess.run([*self.prefix, *command], capture_output=True, text=True,
                                timeout=TIMEOUT, check=False)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def first_line(self, host: str, port: int, request: str = "") -> str:
        """What a client in the namespace is answered first (see the module's doc)."""
        return self.run(sys.executable, os.path.abspath(__file__), "first-line", host,
                        str(port), request).strip()

    def link(self, other: "NetNamespace", addresses: tuple[str, ...],
             other_addresses: tuple[str, ...]) -> None:
        """A veth pair between the two namespaces (as a cable between two machines), with
        ``addresses`` (CIDR) on this end and ``other_addresses`` on the other."""
        self.run("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
                 "netns", str(other.holder.pid))
        for namespace, device, cidrs in ((self, "veth0", addresses),
                                         (other, "veth1", other_addresses)):
            for cidr in cidrs:
                # nodad: the IPv6 address is usable at once, not after duplicate detection
                extra = ("nodad",) if ":" in cidr else ()
                namespace.run("ip", "address", "add", cidr, "dev", device, *extra)
            namespace.run("ip", "link", "set", device, "up")

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(TIMEOUT)


def _first_line(host: str, port: int, request: bytes) -> str:
    try:
        with socket.create_connection((host, port), timeout=10) as sock:
            if request:
                sock.sendall(request)
            line = sock.makefile("rb").readline()
    except OSError as exc:
        return f"error: {exc}"
    return line.decode("utf-8", "replace").strip() or "error: closed without an answer"


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "first-line":
        request = sys.argv[4] if len(sys.argv) == 5 else ""
        print(_first_line(sys.argv[2], int(sys.argv[3]),
                          request.replace("\\r\\n", "\r\n").encode()))
    else:
        sys.exit(f"usage: {sys.argv[0]} first-line HOST PORT [REQUEST]")
