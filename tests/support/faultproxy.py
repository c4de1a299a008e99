"""An HTTP proxy that breaks transfers on purpose, in front of a real server.

Each GET is passed to the upstream server (nginx), then answered faithfully or
broken in one of the ways networks and servers break: cut short after the
headers promised more (truncate), closed at once with a TCP reset (reset), left
hanging past the client's timeout (hang), or answered with the right length and
wrong bytes (corrupt).  The choice is drawn from a seeded random generator, so a
run is repeatable, and every request is counted.
"""
import collections
import http.server
import random
import socket
import struct
import threading
import time

import urllib3

FAULTS = ("truncate", "reset", "hang", "corrupt")


class FaultProxy:
    def __init__(self, upstream, rates, *, hang_seconds=3.0, seed=1):
        """`rates`: fault name -> probability per request, e.g. {"truncate": 0.3}."""
        self.upstream = upstream.rstrip("/")
        self.rates = dict(rates)
        self.hang_seconds = hang_seconds
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.pool = urllib3.PoolManager(retries=False, maxsize=8)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.serve(self)

            def do_HEAD(self):
                proxy.serve(self, head=True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def draw(self):
        with self.lock:
            roll = self.random.random()
            for fault in FAULTS:
                roll -= self.rates.get(fault, 0.0)
                if roll < 0:
                    return fault
            return "ok"

    def serve(self, handler, head=False):
        headers = {k: v for k, v in handler.headers.items() if k.lower() in ("range", "authorization")}
        answer = self.pool.request("HEAD" if head else "GET", self.upstream + handler.path, headers=headers,
                                   preload_content=True)
        fault = "ok" if head or answer.status >= 400 else self.draw()
        with self.lock:
            self.counts[fault] += 1
        body = answer.data
        if fault == "reset":
            # SO_LINGER 0: close() sends a RST, as a crashed server or a middlebox does.
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.close_connection = True
            return
        handler.send_response(answer.status)
        for name in ("Content-Type", "Content-Range", "Last-Modified", "Accept-Ranges"):
            if name in answer.headers:
                handler.send_header(name, answer.headers[name])
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if head:
            return
        if fault == "hang":
            time.sleep(self.hang_seconds)
            handler.close_connection = True
            return
        if fault == "truncate":
            handler.wfile.write(body[:len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        if fault == "corrupt" and body:
            body = bytes(b ^ 0x5A for b in body)
        handler.wfile.write(body)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.pool.clear()
