"""A small HTTP server on 127.0.0.1 that honours Range requests (or not), for download tests."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RangeServer(ThreadingHTTPServer):
    daemon_threads = True
    payload = b""
    honor_range = True
    cut_next: int | None = None  # send only this many body bytes on the next response, then hang up
    fail_with: int | None = None  # answer every request with this HTTP error status
    requests: list[tuple[str | None, int]]
    filename = "tiny.zip"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/tiny.zip"


class RangeHandler(BaseHTTPRequestHandler):
    server: RangeServer

    def do_GET(self) -> None:
        srv = self.server
        data = srv.payload
        if srv.fail_with is not None:
            srv.requests.append((self.headers.get("Range"), srv.fail_with))
            self.send_error(srv.fail_with)
            return
        range_header = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        start, status = 0, 200
        if match and srv.honor_range:
            start, status = int(match.group(1)), 206
            if start >= len(data):
                srv.requests.append((range_header, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        srv.requests.append((range_header, status))
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_next is not None:
            body, srv.cut_next = body[: srv.cut_next], None
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@contextmanager
def serve(payload: bytes, filename: str = "tiny.zip") -> Iterator[RangeServer]:
    """Serve `payload` at `server.url` until the block ends; `server.requests` records (Range, status)."""
    srv = RangeServer(("127.0.0.1", 0), RangeHandler)
    srv.requests, srv.payload, srv.filename = [], payload, filename
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
