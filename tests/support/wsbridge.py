"""MQTT over WebSockets for the tests: Debian 12's Mosquitto cannot open a websockets
listener, so a WebSocket server of the tests' own (the websockets library) carries each
connection's binary frames to Mosquitto's plain TCP listener and back, with TLS (wss) when
given a certificate: what a pump's web front end does on 443."""
import asyncio
import contextlib
import ssl
import threading

import pytest

from tests.support.servers import free_port


class WebSocketBridge:
    def __init__(self, target_port, cert=None, key=None):
        self.target_port = target_port
        self.port = free_port()
        self.tls = None
        if cert:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(cert, key)
        self.paths = []     # the request paths clients asked for
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the WebSocket bridge did not start")

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self):
        import websockets
        self._stop = asyncio.Event()
        async with websockets.serve(self._connection, "127.0.0.1", self.port, subprotocols=["mqtt"],
                                    ssl=self.tls):
            self._ready.set()
            await self._stop.wait()

    async def _connection(self, socket, *legacy_path):
        # The path asked for: websockets 13+ has the request; 10-12 (Debian 12's 10.4) the
        # connection's own path, or an argument when the handler takes two.
        request = getattr(socket, "request", None)
        self.paths.append(request.path if request is not None else
                          legacy_path[0] if legacy_path else socket.path)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream():
            async for frame in socket:
                writer.write(frame)
                await writer.drain()
            writer.close()

        async def downstream():
            while data := await reader.read(65536):
                await socket.send(data)
            await socket.close()
        with contextlib.suppress(Exception):
            await asyncio.gather(upstream(), downstream())

    def close(self):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def websocket_bridge(mosquitto):
    """bridge(tls=False): a ws:// (or wss://) face of the session's Mosquitto."""
    pytest.importorskip("websockets", reason="the WebSocket bridge needs websockets (pip install websockets)")
    bridges = []

    def bridge(tls=False):
        bridges.append(WebSocketBridge(mosquitto.port, *((mosquitto.ca_file, mosquitto.base / "key.pem")
                                                         if tls else ())))
        return bridges[-1]
    yield bridge
    for each in bridges:
        each.close()
