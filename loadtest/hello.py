"""The benchmark's baseline: hello-world on the very server stack tempalias uses.

tempalias's own HTTP server (``tempalias/httpserver.py``: gevent's pywsgi with its client
deadlines and writes) serving a one-route Bottle app, on a listener built by tempalias's own
``make_listener`` (TCP_NODELAY, backlog 1024), in ``--workers N`` forked processes sharing the port
through SO_REUSEPORT as ``tempalias serve --workers`` does. Whatever tempalias's routes cost on top
of this is what the benchmark's ratios show.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402

import bottle  # noqa: E402
from tempalias.config import Config, Listen  # noqa: E402
from tempalias.httpserver import HTTPServer  # noqa: E402
from tempalias.service import HTTP_CONCURRENCY  # noqa: E402
from tempalias.listeners import bound_port, make_listener  # noqa: E402

app = bottle.Bottle()


@app.get("/hello")
def hello() -> str:
    bottle.response.content_type = "application/json"
    return '{"hello": "world"}'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    first = make_listener(Listen("127.0.0.1", 0), reuse_port=True)
    port = bound_port(first)
    sockets = [first] + [make_listener(Listen("127.0.0.1", port), reuse_port=True)
                         for _ in range(args.workers - 1)]
    children = []
    for index, sock in enumerate(sockets):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
            for other in sockets:
                if other is not sock:
                    other.close()
            HTTPServer(sock, app, client_timeout=Config().http_client_timeout,
                       concurrency=HTTP_CONCURRENCY).serve_forever()
            os._exit(0)
        children.append(pid)
    for sock in sockets:
        sock.close()  # each worker holds its own; the parent must not sit in the reuse-port group
    with open(args.ready_file + ".tmp", "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), "http": port, "workers": children}, handle)
    os.replace(args.ready_file + ".tmp", args.ready_file)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            except ProcessLookupError:
                pass
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    raise SystemExit(main())
