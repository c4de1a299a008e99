"""The broker: connect, declare, publish with confirms, consume, ack (py-amqp).

Publishing and consuming use separate connections, so a slow consumer never
stalls confirms and a publisher's flow control never stalls deliveries.  This
module knows messages (topic, body, headers), not notices or files.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

import amqp
import amqp.exceptions
import amqp.transport

from dd.broker import failover
from dd.core.credentials import Url
from dd.core.errors import CERTIFICATE_FIX, BrokerError, BrokerRefusal

if TYPE_CHECKING:  # the broker knows messages, never how notices are encoded into them
    from dd.core.formats import Message

log = logging.getLogger("dd.broker")

#: What py-amqp raises when a connection or channel is gone and a new one may work.
CONNECTION_ERRORS = (OSError, amqp.exceptions.ConnectionError, amqp.exceptions.RecoverableConnectionError,
                     amqp.exceptions.ChannelError, amqp.exceptions.IrrecoverableChannelError)
_TCP_CORK = getattr(socket, "TCP_CORK", None)    # Linux
#: Bytes a connection asks its socket for at once (see _ReadAhead).
READ_AHEAD = 64 << 10


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message as received; `generation` ties its tag to the connection it came on."""

    body: bytes
    headers: dict[str, Any]
    topic: str
    exchange: str
    user_id: str
    tag: int
    generation: int
    redelivered: bool

    @property
    def earlier_deliveries(self) -> int:
        """How many times the broker delivered this message before: a quorum queue counts them
        (x-delivery-count); other queues only say whether it was delivered before."""
        count = self.headers.get("x-delivery-count")
        return count if isinstance(count, int) else int(self.redelivered)


def vhost_of(url: Url) -> str:
    path = urllib.parse.unquote(url.path or "")
    return path[1:] if path.startswith("/") and len(path) > 1 else "/"


class _ReadAhead(amqp.transport.TCPTransport):
    """py-amqp reads each frame with three recv calls of the sizes it needs (header,
    payload, end byte), nine for each delivery or log message.  This one takes what the
    socket holds, up to READ_AHEAD bytes, and serves the frames from it."""

    def _read(self, n: int, initial: bool = False, _errnos: tuple[int, ...] = (errno.EAGAIN, errno.EINTR)) -> bytes:
        # What py-amqp puts back after a timeout may be bytes; a bytearray drops its
        # front in constant time.
        buffer: Any = self._read_buffer  # type: ignore[has-type]  # py-amqp's, untyped
        if not isinstance(buffer, bytearray):
            buffer = bytearray(buffer)
        try:
            while len(buffer) < n:
                try:
                    received = self.sock.recv(max(n - len(buffer), READ_AHEAD))
                except OSError as error:
                    if error.errno in _errnos:
                        if initial and self.raise_on_initial_eintr:
                            raise socket.timeout() from None
                        continue
                    raise
                if not received:
                    raise OSError("Server unexpectedly closed connection")
                buffer += received
        finally:
            self._read_buffer = buffer
        result = bytes(buffer[:n])
        del buffer[:n]
        return result


class _Connection(amqp.Connection):
    def Transport(self, host: str, connect_timeout: Optional[float], ssl: Any = False,  # noqa: N802 - py-amqp's
                  read_timeout: Optional[float] = None, write_timeout: Optional[float] = None,
                  **options: Any) -> Any:
        if ssl:
            return super().Transport(host, connect_timeout, ssl, read_timeout, write_timeout, **options)
        return _ReadAhead(host, connect_timeout=connect_timeout, read_timeout=read_timeout,
                          write_timeout=write_timeout, **options)


def connect(url: Url, *, heartbeat: float = 60, timeout: float = 10.0, name: str = "dd",
            capabilities: Optional[dict[str, bool]] = None) -> Any:
    """An open amqp.Connection to `url` (a dd.core.credentials.Url carrying its password);
    `capabilities` changes what py-amqp asks the broker for (negotiate_capabilities)."""
    tls = url.scheme == "amqps"
    port = url.port or (5671 if tls else 5672)
    options: dict[str, Any] = dict(
        host=f"{url.host}:{port}", userid=url.user or "guest", password=url.password or "guest",
        virtual_host=vhost_of(url), heartbeat=int(heartbeat), connect_timeout=timeout,
        client_properties={"connection_name": name},
    )
    if tls:
        # Certificate and host name are verified against the system's CAs (or SSL_CERT_FILE's).
        options["ssl"] = {"server_hostname": url.host, "cert_reqs": ssl.CERT_REQUIRED}
    connection = _Connection(**options)
    if capabilities:
        connection.negotiate_capabilities = {**connection.negotiate_capabilities, **capabilities}
    try:
        connection.connect()
    except amqp.exceptions.AccessRefused:
        raise BrokerRefusal(f"broker {url} refused the login of user '{url.user}'",
                            fix="check the password in credentials.conf") from None
    except amqp.exceptions.NotAllowed:
        raise BrokerRefusal(f"broker {url}: user '{url.user}' may not use virtual host '{vhost_of(url)}', "
                            f"or it does not exist",
                            fix="check the virtual host in the broker URL; if it is right, ask the broker "
                                "administrator for permissions on it") from None
    except ssl.SSLCertVerificationError as error:  # before OSError: a subclass
        raise BrokerRefusal(f"broker {url}: its TLS certificate is refused: {error.verify_message}",
                            fix=CERTIFICATE_FIX) from None
    except (OSError, amqp.exceptions.AMQPError) as error:
        raise BrokerError(f"cannot connect to broker {url}: {_reason(error)}",
                          fix="check that the broker is running and the URL is right") from None
    return connection


def _reason(error: BaseException) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    return str(error) or type(error).__name__


def close_quietly(connection: Any) -> None:
    if connection is None:
        return
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - the connection is being abandoned anyway
        try:
            connection.collect()
        except Exception:  # noqa: BLE001, S110 - abandoning it: nothing left to report or try
            pass


class _Endpoint:
    """A connection with one channel that re-opens itself with backoff, on the next of the
    broker's nodes when it names several (dd.broker.failover)."""

    #: What this kind of endpoint changes in py-amqp's negotiate_capabilities.
    CAPABILITIES: dict[str, bool] = {}

    def __init__(self, url: Url, *, heartbeat: float, name: str, timeout: float = 10.0,
                 shuffle: bool = False) -> None:
        self.endpoints = failover.Endpoints(url, shuffle=shuffle)
        self.heartbeat = heartbeat
        self.name = name
        self.timeout = timeout
        self.connection: Any = None     # an amqp.Connection, or None between connections
        self.channel: Any = None
        self.generation = 0

    @property
    def url(self) -> Url:
        """The URL of the node connected to (or to be tried next)."""
        return self.endpoints.current

    @property
    def connected(self) -> bool:
        return self.connection is not None

    @property
    def limits(self) -> str:
        return ""

    def open(self) -> Any:
        if self.connection is None:
            self._set_up(self.endpoints.first_answering(self._connect))
        return self.channel

    def _connect(self, url: Url) -> Any:
        return connect(url, heartbeat=self.heartbeat, timeout=self.timeout, name=self.name,
                       capabilities=self.CAPABILITIES)

    def _set_up(self, connection: Any) -> Any:
        self.connection = connection
        self.channel = self.connection.channel()
        self.generation += 1
        self._on_open()
        return self.channel

    def _on_open(self) -> None:
        """Set the channel up after every (re)connection."""

    def close(self) -> None:
        close_quietly(self.connection)
        self.connection = self.channel = None

    def reopen(self, backoff_max: float = 30.0, give_up_after: Optional[float] = None,
               stop: Optional[threading.Event] = None) -> Any:
        """Drop the connection and connect again, to the broker's next node if it has several,
        waiting longer after each round that failed (see failover.Endpoints.reconnect).
        Returns the channel, or None, unconnected, once `stop` (a threading.Event) is set:
        a component told to stop while its broker is away stops."""
        self.close()
        connection = self.endpoints.reconnect(self._connect, backoff_max=backoff_max,
                                              give_up_after=give_up_after, stop=stop)
        return None if connection is None else self._set_up(connection)

    def tick(self) -> None:
        """Read what arrived and keep heartbeats flowing; safe during long transfers."""
        if self.connection is None:
            return
        try:
            while True:
                self.connection.drain_events(timeout=0)
        except socket.timeout:
            pass
        self.connection.heartbeat_tick()

    def has_exchange(self, exchange: str) -> bool:
        """Whether the exchange exists, asked on a throw-away channel: a passive declaration
        of a missing exchange closes its channel, and the working channel must keep its
        confirm mode and consumers."""
        self.open()
        probe = self.connection.channel()
        try:
            probe.exchange_declare(exchange, "topic", passive=True)
        except amqp.exceptions.NotFound:
            return False
        probe.close()
        return True

    def declare_exchange(self, exchange: str) -> None:
        """Make sure a durable topic exchange exists, creating it when we may."""
        if self.has_exchange(exchange):
            return
        creator = self.connection.channel()
        try:
            creator.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
            creator.close()
        except amqp.exceptions.AccessRefused:
            raise BrokerRefusal(f"exchange '{exchange}' does not exist on {self.url} and user "
                              f"'{self.url.user}' may not create it",
                              fix="ask the pump administrator to declare it") from None


class Publisher(_Endpoint):
    """Publishes persistent messages with pipelined publisher confirms."""

    #: With connection.blocked, py-amqp reads the socket before every publish, to notice the
    #: broker's notification; dd does nothing with it (a blocked broker shows as confirms that
    #: do not come, see wait()), and that read was a quarter of the cost of a publish.
    #: Confirms are read in wait(), in bulk.
    CAPABILITIES = {"connection.blocked": False}

    #: Seconds between two warnings about returned (unroutable) messages.
    RETURNS_LOGGED_EVERY = 60.0

    def __init__(self, url: Url, *, heartbeat: float = 60, name: str = "dd-publisher",
                 shuffle: bool = False) -> None:
        super().__init__(url, heartbeat=heartbeat, name=name, shuffle=shuffle)
        self.returned = 0       # messages the broker could route to no queue, since the last warning
        self._returns_logged = 0.0
        self._next_tag = 0
        self._pending: dict[int, Any] = {}      # delivery tag -> caller's reference
        self._nacked: list[Any] = []
        self._declared: set[str] = set()
        self._corked = False

    def _on_open(self) -> None:
        self._next_tag = 0
        self._declared.clear()
        self._corked = False
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)
        self.channel.confirm_select()

    def _on_return(self, error: Exception, exchange: str, topic: str, message: Any) -> None:
        """A mandatory publish no queue took: none is bound for it (nobody subscribes to that
        topic), or the node holding the classic queue bound for it is down, which would
        otherwise be a silent loss.  The broker cannot tell which: it is counted and said."""
        self.returned += 1
        now = time.monotonic()
        if now - self._returns_logged >= self.RETURNS_LOGGED_EVERY:
            log.warning("%d message(s) to exchange '%s' on %s reached no queue (%s, e.g. topic %s): no queue "
                        "is bound for them, or the node holding it is down (use queue_type quorum on a "
                        "cluster)", self.returned, exchange, self.url, error, topic)
            self.returned, self._returns_logged = 0, now

    def publish(self, exchange: str, message: Message, reference: Any = None) -> None:
        """Send `message` (dd.core.formats.Message); its confirm arrives later, see wait()."""
        channel = self.open()
        if exchange not in self._declared:
            self._cork(False)   # a declaration is a question: it must leave now
            self.declare_exchange(exchange)
            self._declared.add(exchange)
        self._cork(True)
        properties = dict(delivery_mode=2, content_type=message.content_type,
                          application_headers=dict(message.headers))
        if self.url.user:
            # RabbitMQ checks user_id against the login: downstream can trust it.
            properties["user_id"] = self.url.user
        self._next_tag += 1
        self._pending[self._next_tag] = reference
        channel.basic_publish(_Message(message.body, **properties), exchange=exchange,
                              routing_key=message.topic, mandatory=True)

    def _cork(self, on: bool) -> None:
        """While corked, the kernel sends a batch's messages in full TCP segments rather than
        one small one each: fewer packets for the broker to read, and cheaper writes (a
        1 KiB notice's publish and confirm cost about a quarter less wall time on loopback).
        Uncorking sends what is held; the kernel sends it anyway after 200 ms."""
        if on == self._corked or _TCP_CORK is None or self.connection is None:
            return
        self._corked = on
        try:
            self.connection.transport.sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, int(on))
        except (AttributeError, OSError):
            pass    # not a socket we can cork (or a lost one): messages go one by one

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._confirmed(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked.extend(self._confirmed(tag, multiple))

    def _confirmed(self, tag: int, multiple: bool) -> list[Any]:
        """Take `tag` (and, when `multiple`, every tag before it) off the pending ones; return
        their references.  Tags are pending in increasing order, so a multiple confirm takes
        from the front: each confirm costs what it settles, not what is still pending."""
        pending = self._pending
        if not multiple:
            return [pending.pop(tag)] if tag in pending else []
        settled: list[int] = []
        for first in pending:
            if first > tag:
                break
            settled.append(first)
        return [pending.pop(t) for t in settled]

    @property
    def unconfirmed(self) -> list[Any]:
        return list(self._pending.values())

    def flush(self) -> None:
        """Send what publishes hold back (see _cork) now, without waiting for confirms."""
        self._cork(False)

    def wait(self, timeout: float = 30.0) -> list[Any]:
        """Block until every publish is confirmed; return the references the broker refused."""
        self._cork(False)
        deadline = time.monotonic() + timeout
        while self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(f"broker {self.url} did not confirm {len(self._pending)} "
                                  f"message(s) within {timeout:g} s")
            try:
                self.connection.drain_events(timeout=min(remaining, 1.0))
            except socket.timeout:
                self.connection.heartbeat_tick()
        refused, self._nacked = self._nacked, []
        return refused

    def forget_pending(self) -> list[Any]:
        """After a lost connection: hand back what was never confirmed."""
        lost = self.unconfirmed + self._nacked
        self._pending.clear()
        self._nacked = []
        return lost


class _Message(amqp.Message):
    """An amqp.Message whose properties, when they carry no headers, are serialized once per
    kind: a flow publishes thousands of messages with the same few properties, and py-amqp
    serializes them anew for every one (a sixth of the cost of a publish)."""

    _serialized: dict[tuple[Any, ...], bytes] = {}

    def _serialize_properties(self) -> bytes:
        properties = self.properties
        if properties.get("application_headers") or not _CACHEABLE.issuperset(properties):
            fresh: bytes = super()._serialize_properties()
            return fresh
        # An empty headers table is serialized, an absent one is not.
        key = (*(properties.get(name) for name in _SIMPLE), "application_headers" in properties)
        serialized = self._serialized.get(key)
        if serialized is None:
            serialized = self._serialized[key] = super()._serialize_properties()
        return serialized


#: The properties Publisher.publish sets: what a cached serialization may be of.
_SIMPLE = ("delivery_mode", "content_type", "user_id")
_CACHEABLE = frozenset(_SIMPLE + ("application_headers",))


def queue_size(connection: Any, queue: str) -> Optional[tuple[int, int]]:
    """(messages waiting, consumers) of `queue`, asked passively; None when it does not exist."""
    channel = connection.channel()
    try:
        _, messages, consumers = channel.queue_declare(queue, passive=True)
    except amqp.exceptions.NotFound:
        return None  # the broker closed the channel
    channel.close()
    return messages, consumers


@dataclasses.dataclass(frozen=True)
class Subscription:
    """A durable queue and what it is bound to."""

    queue: str
    exchange: str
    bindings: tuple[str, ...]  # binding keys
    expire: float = 0.0      # seconds without consumer before the broker deletes the queue
    message_ttl: float = 0.0
    private_exchange: str = ""  # also bound, with the same keys, when the broker has it
    queue_type: str = "classic"     # classic, quorum or stream (x-queue-type)
    stream_offset: Any = "next"     # where a stream is read from: first, next, last or a datetime

    def arguments(self) -> dict[str, Any]:
        """The queue's x- arguments.  A stream keeps what it holds for message_ttl (x-max-age)
        and is not deleted for want of a consumer: the broker refuses x-expires on one."""
        arguments: dict[str, Any] = {}
        if self.queue_type != "classic":
            arguments["x-queue-type"] = self.queue_type
        if self.queue_type == "stream":
            if self.message_ttl:
                arguments["x-max-age"] = f"{int(self.message_ttl)}s"
            return arguments
        if self.expire:
            arguments["x-expires"] = int(self.expire * 1000)
        if self.message_ttl:
            arguments["x-message-ttl"] = int(self.message_ttl * 1000)
        return arguments


class Consumer(_Endpoint):
    """Consumes from one durable queue with manual acks and a prefetch window."""

    def __init__(self, url: Url, subscription: Subscription, *, prefetch: int = 25, heartbeat: float = 60,
                 name: str = "dd-consumer", shuffle: bool = False) -> None:
        super().__init__(url, heartbeat=heartbeat, name=name, shuffle=shuffle)
        self.subscription = subscription
        self.prefetch = prefetch
        self._inbox: collections.deque[Delivery] = collections.deque()
        self._unacked: set[int] = set()    # tags delivered on this connection and not yet acked

    def declare(self) -> None:
        """Declare the queue and its bindings (idempotent)."""
        sub = self.subscription
        channel = self.open()
        try:
            channel.queue_declare(sub.queue, durable=True, auto_delete=False, arguments=sub.arguments())
        except amqp.exceptions.PreconditionFailed as error:
            raise BrokerError(f"queue '{sub.queue}' exists with other settings: {error.reply_text}",
                              fix="run cleanup to remove the old queue") from None
        except amqp.exceptions.AccessRefused:
            raise BrokerError(f"user '{self.url.user}' may not declare queue '{sub.queue}' on {self.url}",
                              fix="queues must be named q_<user>.*") from None
        self.declare_exchange(sub.exchange)
        for key in sub.bindings:
            try:
                channel.queue_bind(sub.queue, sub.exchange, key)
            except amqp.exceptions.AccessRefused:
                raise BrokerError(f"user '{self.url.user}' may not read exchange '{sub.exchange}' "
                                  f"on {self.url}", fix="check the exchange option") from None
        if sub.private_exchange and self.has_exchange(sub.private_exchange):
            self._bind_private(sub)

    def _bind_private(self, sub: Subscription) -> None:
        """Bind the private exchange on a channel of its own: a refusal closes its channel."""
        channel = self.connection.channel()
        try:
            for key in sub.bindings:
                channel.queue_bind(sub.queue, sub.private_exchange, key)
            channel.close()
        except amqp.exceptions.AccessRefused:
            log.warning("user '%s' may not read its private exchange '%s' on %s: private data for it will "
                        "not arrive (the pump's administrator runs dd_audit declare)", self.url.user,
                        sub.private_exchange, self.url)

    def _on_open(self) -> None:
        self._inbox.clear()
        self._unacked = set()
        # Per consumer (global off): a quorum queue closes the channel of a global one.
        self.channel.basic_qos(0, self.prefetch, False)

    def start(self) -> None:
        self.declare()
        sub = self.subscription
        arguments = {"x-stream-offset": sub.stream_offset} if sub.queue_type == "stream" else None
        self.channel.basic_consume(sub.queue, callback=self._receive, no_ack=False, arguments=arguments)

    def _receive(self, message: Any) -> None:
        info = message.delivery_info
        properties = message.properties
        self._inbox.append(Delivery(
            body=message.body if isinstance(message.body, bytes) else message.body.encode(),
            headers=dict(properties.get("application_headers") or {}),
            topic=info.get("routing_key", ""), exchange=info.get("exchange", ""),
            user_id=properties.get("user_id", ""), tag=info["delivery_tag"],
            generation=self.generation, redelivered=bool(info.get("redelivered"))))

    def fetch(self, timeout: float) -> list[Delivery]:
        """Return the deliveries that arrive within `timeout` seconds (maybe none):
        once one is there, whatever else has already arrived, up to half the prefetch
        window; the broker fills the other half meanwhile, so the next batch is here
        when this one is acknowledged."""
        if not self._inbox:
            try:
                self.connection.drain_events(timeout=timeout)
            except socket.timeout:
                self.connection.heartbeat_tick()
        try:
            while len(self._inbox) < self.prefetch:
                self.connection.drain_events(timeout=0)
        except socket.timeout:
            pass
        size = max(1, self.prefetch // 2)
        batch = [self._inbox.popleft() for _ in range(min(size, len(self._inbox)))]
        self._unacked.update(d.tag for d in batch)
        return batch

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """Acknowledge deliveries, in any order; tags from an earlier connection are stale and
        never sent.  Those that are the oldest outstanding are acknowledged by one frame."""
        tags = sorted(d.tag for d in deliveries if d.generation == self.generation)
        if not tags or self.channel is None:
            return
        oldest = sorted(self._unacked)[:len(tags)]
        run = next((n for n, (tag, old) in enumerate(zip(tags, oldest)) if tag != old), len(oldest))
        if run:     # multiple=True acknowledges every tag up to this one: exactly these
            self.channel.basic_ack(tags[run - 1], multiple=True)
        for tag in tags[run:]:
            self.channel.basic_ack(tag)
        self._unacked.difference_update(tags)

    def delete(self) -> None:
        self.open().queue_delete(self.subscription.queue)
