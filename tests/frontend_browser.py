"""Helpers for the browser tests: Debian's Chromium under Playwright, a third-party web site on
another origin, and axe-core from the project-local npm folder.

Chromium is the system one (``make test`` installs the Debian package); Playwright never
downloads a browser of its own. The flags keep it from phoning home on a closed network.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
AXE = Path(__file__).resolve().parent / "frontend_node" / "node_modules" / "axe-core" / "axe.min.js"


def axe_source() -> str:
    if not AXE.exists():
        raise AssertionError(f"{AXE} is missing: `make test` (or `make frontend-node`) installs it")
    return AXE.read_text(encoding="utf-8")


# A sign-up page of somebody else's, with its own script listening to its email field and its
# own aggressive CSS that our overlay must survive.
SIGNUP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Example shop: sign up</title>
<style>
  div, p, button { font-size: 40px !important; color: red !important; }
  input { width: 20em; font-size: 18px; }
</style>
<script src="/shop.js"></script>
</head><body>
<h1>Create your account</h1>
<form id="signup">
  <label for="name">Name</label> <input id="name" type="text" name="name"><br>
  <label for="email">Email</label> <input id="email" type="email" name="email"><br>
  <label for="news">Newsletter</label> <input id="news" type="checkbox" name="news">
  <button type="submit">Sign up</button>
</form>
<p id="seen">nothing typed yet</p>
</body></html>
"""

SHOP_SCRIPT = """
window.shopEvents = [];
document.addEventListener("DOMContentLoaded", function () {
  var email = document.getElementById("email");
  email.addEventListener("input", function () {
    window.shopEvents.push("input:" + email.value);
    document.getElementById("seen").textContent = "the shop saw " + email.value;
  });
  email.addEventListener("change", function () { window.shopEvents.push("change:" + email.value); });
});
"""

# Only its own origin may run scripts, as many banking and e-mail sites are set up.
STRICT_CSP = "default-src 'self'; script-src 'self'; connect-src 'self'"


class _ThirdPartyHandler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[str, str, dict[str, str]]] = {}

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        content_type, body, headers = route
        data = body.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # quiet: pytest shows failures anyway
        pass


@contextlib.contextmanager
def third_party_site() -> Iterator[str]:
    """Another origin on loopback: ``/signup`` (no CSP) and ``/strict`` (CSP blocks our script)."""
    handler = type("Handler", (_ThirdPartyHandler,), {"routes": {
        "/signup": ("text/html; charset=utf-8", SIGNUP_PAGE, {}),
        "/strict": ("text/html; charset=utf-8", SIGNUP_PAGE,
                    {"Content-Security-Policy": STRICT_CSP}),
        "/shop.js": ("text/javascript; charset=utf-8", SHOP_SCRIPT, {}),
    }})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
