"""A scripted HTTP server on 127.0.0.1 for the download tests of datasets and resources (fixture in conftest.py)."""

import threading
from collections import deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = bytes(range(256)) * 400  # 102,400 bytes: several socket buffers, so truncation happens mid-stream


class _Handler(BaseHTTPRequestHandler):
    """Serve `server.body`; each GET pops the next scripted action for its path (default: 'ok')."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        queue = srv.script.get(self.path)
        action = queue.popleft() if queue else "ok"
        if isinstance(action, int):
            self.send_error(action)
        elif action == "truncate":
            self.send_response(200)
            self.send_header("Content-Length", str(len(srv.body)))
            self.end_headers()
            self.wfile.write(srv.body[: len(srv.body) // 2])
            self.close_connection = True
        else:
            self._send_body(honour_range=action != "ignore_range")

    def _send_body(self, honour_range: bool):
        body, start = self.server.body, 0
        requested = self.headers.get("Range")
        if requested and honour_range:
            start = int(requested.removeprefix("bytes=").removesuffix("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@contextmanager
def scripted_server():
    """A threaded HTTP server on an ephemeral 127.0.0.1 port; `server.url(path)`, `.script[path]`, `.requests`."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.body, srv.script, srv.requests = BODY, {}, []
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    srv.queue = lambda path, *actions: srv.script.__setitem__(path, deque(actions))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()
