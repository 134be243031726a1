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
import functools  # noqa: E402

import bottle  # noqa: E402

from loadtest.forked import block_stop_signals, run_forked  # noqa: E402
from tempalias.abuse import connection_subject  # noqa: E402
from tempalias.config import Config  # noqa: E402
from tempalias.httpserver import HTTPServer  # noqa: E402

app = bottle.Bottle()


@app.get("/hello")
def hello() -> str:
    bottle.response.content_type = "application/json"
    return '{"hello": "world"}'


def serve(listener) -> None:
    config = Config()  # the defaults, as `tempalias serve` has them, caps and trusted networks
    subject = functools.partial(connection_subject, settings=config.section("abuse"))
    HTTPServer(listener, app, config.section("http"), subject).serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    return run_forked(args.workers, args.ready_file, "http", serve)


if __name__ == "__main__":
    block_stop_signals()
    raise SystemExit(main())
