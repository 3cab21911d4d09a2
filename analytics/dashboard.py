"""`fleetpulse dashboard`: the report page served locally, re-queried on every load."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fleetpulse.errors import one_line

from .report import render, report_data

log = logging.getLogger("fleetpulse.dashboard")


def make_server(data: str | Path, host: str, port: int,
                experiments: Sequence[tuple[str, str]] = ()) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                try:
                    body = render(report_data(data, experiments), refresh_hint=True).encode()
                    status = 200
                except Exception as e:  # a broken dataset must not kill the server
                    log.exception("cannot build the dashboard")
                    body = (f"<!doctype html><title>fleetpulse</title><p>cannot read the "
                            f"dataset: {html.escape(one_line(e))}</p>").encode()
                    status = 500
                ctype = "text/html; charset=utf-8"
            elif self.path == "/healthz":
                body, status, ctype = b"ok", 200, "text/plain"
            else:
                body, status, ctype = b"not found", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

    return ThreadingHTTPServer((host, port), Handler)
