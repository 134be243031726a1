"""Helpers for the browser tests: Debian's Chromium under Playwright, a third-party web site on
another origin, axe-core from the project-local npm folder, and screenshots decoded as a person
would see them.

Chromium is the system one (``make test`` installs the Debian package); Playwright never
downloads a browser of its own. The flags keep it from phoning home on a closed network.
"""

from __future__ import annotations

import base64
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
# A service's settings for tempalias with its real rate limiter on loopback (a trusted network as
# shipped), limited per target address only: add TEMPALIAS_CREATE_DAILY_PER_TARGET.
LIMITED_ON_LOOPBACK = {
    "TEMPALIAS_TRUSTED_NETWORKS": "",
    "TEMPALIAS_CREATE_RATE_PER_IP": "0",
    "TEMPALIAS_CREATE_DAILY_PER_IP": "0",
}
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

# The same page with a spy of its own, as a hostile or compromised page would be: it wraps every way
# a page sends or receives data (fetch, XMLHttpRequest, sendBeacon, WebSocket, messages posted to
# it) and keeps what passed through, to learn what the extension's traffic carries.
SPY_SCRIPT = """
window.spied = [];
(function () {
  function record(what) { window.spied.push(String(what)); }
  var realFetch = window.fetch;
  window.fetch = function (input, init) {
    record("fetch " + (input && input.url ? input.url : input) + " " + JSON.stringify(init));
    return realFetch.apply(this, arguments);
  };
  var open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) {
    record("xhr " + method + " " + url);
    return open.apply(this, arguments);
  };
  XMLHttpRequest.prototype.send = function (body) {
    record("xhr body " + body);
    return send.apply(this, arguments);
  };
  var beacon = navigator.sendBeacon.bind(navigator);
  navigator.sendBeacon = function (url, data) {
    record("beacon " + url + " " + data);
    return beacon(url, data);
  };
  var RealSocket = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    record("websocket " + url);
    return new RealSocket(url, protocols);
  };
  window.addEventListener("message", function (event) {
    record("message " + JSON.stringify(event.data));
  }, true);
})();
"""
SPY_PAGE = SIGNUP_PAGE.replace('<script src="/shop.js"></script>',
                               '<script src="/spy.js"></script><script src="/shop.js"></script>')

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
    """Another origin on loopback: ``/signup`` (no CSP), ``/strict`` (CSP blocks our script) and
    ``/spy`` (the sign-up page wrapping every way it could learn what the extension sends)."""
    handler = type("Handler", (_ThirdPartyHandler,), {"routes": {
        "/signup": ("text/html; charset=utf-8", SIGNUP_PAGE, {}),
        "/spy": ("text/html; charset=utf-8", SPY_PAGE, {}),
        "/spy.js": ("text/javascript; charset=utf-8", SPY_SCRIPT, {}),
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


DECODE_PNG = """async (data) => {
    const image = new Image();
    image.src = "data:image/png;base64," + data;
    await image.decode();
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const colours = new Set();
    let luminance = 0;
    for (let i = 0; i < pixels.length; i += 4) {
        colours.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
        luminance += 0.2126 * pixels[i] + 0.7152 * pixels[i + 1] + 0.0722 * pixels[i + 2];
    }
    return {width: canvas.width, height: canvas.height, colours: colours.size,
            luminance: luminance / (pixels.length / 4) / 255};
}"""


def decoded_png(context, png: bytes) -> dict:
    """A screenshot as the browser itself decodes it, in a blank page of ``context``: its width
    and height in pixels, its distinct colours, its mean luminance (0 black to 1 white)."""
    blank = context.new_page()
    try:
        return blank.evaluate(DECODE_PNG, base64.b64encode(png).decode("ascii"))
    finally:
        blank.close()
