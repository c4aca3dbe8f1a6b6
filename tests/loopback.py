"""A small HTTP server on 127.0.0.1 that honours Range requests (or not), for download tests.

It answers GET and HEAD for any path. Options for hostile or Hub-like servers: `endless` (the payload, then zeros
for ever, with no Content-Length), `content_length` (declare this instead of the true length) and `hf_commit`
(answer like the Hugging Face Hub's `/{repo}/resolve/{revision}/{file}`: X-Repo-Commit and an ETag).
"""

from __future__ import annotations

import hashlib
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
    endless: bool = False  # after the payload, send zeros until the client hangs up; no Content-Length
    endless_cap = 256 * 2**20  # ...or until this many have gone, so that a client with no bound fails, not hangs
    content_length: int | None = None  # declare this Content-Length instead of the body's
    hf_commit: str | None = None  # send X-Repo-Commit with this commit and the payload's sha256 as ETag
    requests: list[tuple[str | None, int]]
    calls: list[tuple[str, str]]  # (method, path) of every request, in order
    filename = "tiny.zip"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/tiny.zip"


class RangeHandler(BaseHTTPRequestHandler):
    server: RangeServer

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        srv = self.server
        srv.calls.append((self.command, self.path))
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
        if not srv.endless:
            self.send_header("Content-Length", str(len(body) if srv.content_length is None else srv.content_length))
        if srv.hf_commit is not None:
            self.send_header("X-Repo-Commit", srv.hf_commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.end_headers()
        if head:
            return
        if srv.cut_next is not None:
            body, srv.cut_next = body[: srv.cut_next], None
        try:
            self.wfile.write(body)
            zeros, sent = bytes(1 << 16), 0
            while srv.endless and sent < srv.endless_cap:  # until the client closes the connection
                self.wfile.write(zeros)
                sent += len(zeros)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what a bounded download does

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@contextmanager
def running(srv: RangeServer) -> Iterator[RangeServer]:
    """`srv` serving on a background thread until the block ends, then shut down and closed."""
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@contextmanager
def serve(payload: bytes, filename: str = "tiny.zip") -> Iterator[RangeServer]:
    """Serve `payload` at `server.url` until the block ends; `server.requests` records (Range, status)."""
    srv = RangeServer(("127.0.0.1", 0), RangeHandler)
    srv.requests, srv.calls, srv.payload, srv.filename = [], [], payload, filename
    with running(srv):
        yield srv
