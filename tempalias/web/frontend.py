"""Static frontend files, served from ``static/`` (an absolute root, never a relative one)."""

from __future__ import annotations

import os

from bottle import Bottle, static_file

from tempalias.config import Config

STATIC_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "static"))


def install(app: Bottle, config: Config) -> None:
    @app.get("/")
    def index():
        return static_file("index.html", root=STATIC_ROOT)

    @app.get("/static/<path:path>")
    def static(path: str):
        return static_file(path, root=STATIC_ROOT)
