"""`fleetpulse dashboard`: the report page served locally for the view in its URL
(/?since=2026-02-01&until=2026-02-28&by=fw&feature=eco_mode), re-queried on every load."""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Sequence
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fleetpulse.errors import one_line

from . import DEFAULT_FEATURE, charts
from .panels import View
from .report import page_with_library, render, report_data

log = logging.getLogger("fleetpulse.dashboard")

PARAMS = ("since", "until", "by", "feature")


def view_from_query(query: str) -> View:
    """The view a URL's query string names; ValueError saying which parameter is wrong."""
    q = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(q) - set(PARAMS))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}: the page takes "
                         f"{', '.join(PARAMS)}")
    one = {k: v[-1].strip() for k, v in q.items()}

    def day(name: str) -> date | None:
        if not one.get(name):
            return None
        try:
            return date.fromisoformat(one[name])
        except ValueError:
            raise ValueError(f"{name}={one[name]!r} is not a day: use YYYY-MM-DD") from None

    return View(since=day("since"), until=day("until"), by=one.get("by") or "all",
                feature=one.get("feature") or DEFAULT_FEATURE)


def _page(status: int, text: str) -> tuple[int, bytes, str]:
    body = (f"<!doctype html><title>fleetpulse</title><p>{html.escape(text)}</p>"
            f"<p><a href=\"/\">the whole dataset</a></p>")
    return status, body.encode(), "text/html; charset=utf-8"


def make_server(data: str | Path, host: str, port: int,
                experiments: Sequence[tuple[str, str]] = ()) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _respond(self) -> tuple[int, bytes, str]:
            url = urlsplit(self.path)
            if url.path == "/healthz":
                return 200, b"ok", "text/plain"
            if url.path == "/favicon.ico":  # browsers ask; nothing to show, nothing wrong
                return 204, b"", "image/x-icon"
            if url.path not in ("/", "/index.html"):
                return 404, b"not found", "text/plain"
            try:
                view = view_from_query(url.query)
            except ValueError as e:
                return _page(400, str(e))
            try:
                page = render(report_data(data, view, experiments), served=True)
            except Exception as e:  # a broken dataset must not kill the server
                log.exception("cannot build the dashboard")
                return _page(500, f"cannot read the dataset: {one_line(e)}")
            return 200, page.encode(), "text/html; charset=utf-8"

        def do_GET(self) -> None:
            status, body, ctype = self._respond()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

    # The chart library's bundle and the schema-checked specs take about 2 s to build
    # once per process: built while the server starts listening, not on the first load.
    threading.Thread(target=_warm, daemon=True).start()
    return ThreadingHTTPServer((host, port), Handler)


def _warm() -> None:
    page_with_library()
    for name in charts.BUILDERS:
        for segmented in (False, True):
            charts.spec(name, segmented)
