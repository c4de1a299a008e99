"""A small HTTP server for tests: serves a directory with byte ranges and can
serve given ranges wrong once (a flaky disk or proxy) or not at all, cut a transfer short once,
ignore ranges (an old server), and send slowly, counting the bytes it served, on a
free 127.0.0.1 port."""
import base64
import contextlib
import http.server
import os
import re
import socket
import threading
import time
import urllib.parse

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class RangeServer:
    def __init__(self, root):
        self.root = str(root)
        self.corrupt_once = set()      # (relative path, first byte of a range) served wrong once
        self.corrupted = []            # what was actually served wrong
        self.cut_once = {}             # (relative path, first byte of a range) -> bytes sent before a cut
        self.unavailable = set()       # (relative path, first byte of a range) answered 503 while there
        self.ignore_ranges = False     # answer every GET with the whole file (200)
        self.close_each = False        # say "Connection: close" and close after every answer
        self.rate = 0                  # bytes per second per connection; 0: as fast as it goes
        self.password = None           # when set, a GET without user "dd" and this password: 401
        self.refused = []              # (first byte, whether a password came) of each GET refused 401
        self.served = 0                # body bytes sent, all requests
        self.requests = []             # (relative path, first byte, bytes asked) of each GET
        self.active = self.most_active = 0   # GETs being answered now, and at most at once
        # (client port, first byte, whether the client's next request was already there when
        # this answer ended) of each GET answered in full
        self.answered = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body):
                rel = urllib.parse.unquote(self.path).lstrip("/")
                path = os.path.join(server.root, rel)
                if ".." in rel.split("/") or not os.path.isfile(path):
                    self.send_error(404)
                    return
                if server.password is not None and not self._authorized():
                    return
                size = os.path.getsize(path)
                first, last, status = 0, size - 1, 200
                asked = _RANGE.fullmatch(self.headers.get("Range", ""))
                if (rel, int(asked[1]) if asked else 0) in server.unavailable:
                    self.send_error(503)
                    return
                match = _RANGE.fullmatch(self.headers.get("Range", ""))
                if match and not server.ignore_ranges:
                    first = int(match[1])
                    last = min(int(match[2]), size - 1) if match[2] else size - 1
                    status = 206
                length = last - first + 1
                self.send_response(status)
                self.send_header("Content-Length", str(length))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                if server.close_each:
                    self.send_header("Connection", "close")
                self.end_headers()
                if not body:
                    return
                with server.lock:
                    server.requests.append((rel, first, length))
                    wrong = (rel, first) in server.corrupt_once
                    server.corrupt_once.discard((rel, first))
                    if wrong:
                        server.corrupted.append((rel, first))
                    cut = server.cut_once.pop((rel, first), None)
                with server.lock:
                    server.active += 1
                    server.most_active = max(server.most_active, server.active)
                try:
                    with open(path, "rb") as f:
                        f.seek(first)
                        if wrong:
                            data = bytearray(f.read(length))
                            data[0] ^= 0xFF
                            self.wfile.write(data)
                            server.count(length)
                        else:
                            _copy(f, self.wfile, length if cut is None else cut, server)
                    if cut is not None:
                        self._cut()
                    else:
                        self.wfile.flush()
                        with server.lock:
                            server.answered.append((self.client_address[1], first, self._request_waiting()))
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    with server.lock:
                        server.active -= 1

            def _authorized(self):
                """As a server of private data: 401 (the connection kept) unless the password came."""
                given = self.headers.get("Authorization")
                if given == "Basic " + base64.b64encode(f"dd:{server.password}".encode()).decode():
                    return True
                asked = _RANGE.fullmatch(self.headers.get("Range", ""))
                with server.lock:
                    server.refused.append((int(asked[1]) if asked else 0, given is not None))
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="private"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def _request_waiting(self):
                """Whether the client's next request is already here (its end of the connection
                closed is not one)."""
                try:
                    return bool(self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
                except OSError:   # nothing yet: BlockingIOError
                    return False

            def _cut(self):
                """End the connection after what was sent, as a server that stops does: with
                a request the client sent ahead still unread, closing at once would reset the
                connection, and the client lose what it had not read yet of this answer."""
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(10)
                with contextlib.suppress(OSError):
                    while self.connection.recv(1 << 16):
                        pass
                self.close_connection = True

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client killed mid-transfer is part of the tests

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def count(self, nbytes):
        with self.lock:
            self.served += nbytes

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _copy(src, dst, length, server):
    step = 64 << 10 if server.rate else 1 << 20
    started, sent = time.monotonic(), 0
    while length > 0:
        chunk = src.read(min(length, step))
        if not chunk:
            return
        dst.write(chunk)
        server.count(len(chunk))
        sent += len(chunk)
        length -= len(chunk)
        if server.rate:
            time.sleep(max(0.0, started + sent / server.rate - time.monotonic()))

