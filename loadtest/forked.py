"""Pre-forked workers on one port for the benchmark's reference servers (loadtest/hello.py,
loadtest/minirelay.py), the way ``tempalias serve --workers`` runs: N processes, each with its own
SO_REUSEPORT listener on the same port, the parent only waiting for SIGTERM to stop them.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Callable

from tempalias.config import Listen
from tempalias.listeners import bound_port, make_listener


def block_stop_signals() -> None:
    """Call first: SIGTERM and SIGINT wait for ``run_forked``'s sigwait, not a handler."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def run_forked(workers: int, ready_file: str, port_name: str, serve: Callable) -> int:
    """Fork ``workers`` processes each calling ``serve(listener)``; write ``{"pid", port_name,
    "workers"}`` to ``ready_file`` once all listen; stop them all on SIGTERM or SIGINT."""
    first = make_listener(Listen("127.0.0.1", 0), reuse_port=True)
    port = bound_port(first)
    sockets = [first] + [make_listener(Listen("127.0.0.1", port), reuse_port=True)
                         for _ in range(workers - 1)]
    children = []
    for sock in sockets:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
            for other in sockets:
                if other is not sock:
                    other.close()
            serve(sock)
            os._exit(0)
        children.append(pid)
    for sock in sockets:
        sock.close()  # each worker holds its own; the parent must not sit in the reuse-port group
    with open(ready_file + ".tmp", "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), port_name: port, "workers": children}, handle)
    os.replace(ready_file + ".tmp", ready_file)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass
    return 0
