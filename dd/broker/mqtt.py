"""The broker over MQTT (paho-mqtt 2.1 or newer): mqtt://, mqtts://, ws:// and wss://.

MQTT 5 where the broker speaks it: QoS 1 both ways; a consumer keeps a persistent session
(clean start off, session expiry from `expire`) and subscribes to `$share/<queue>/<topic>`,
so that the instances of a configuration share the work; a message is acknowledged
(PUBACK) only when the flow says its work is durable; a publish is confirmed by its
PUBACK, and refused when that carries a failure (not authorized).  MQTT 3.1.1 where that
is all the broker speaks: no shared subscriptions (one instance per subscription), no
headers.

Topics: MQTT has no exchanges, so an exchange is a topic's first level: a message with
AMQP topic `v03.a.b` published to exchange `xpublic` goes on `xpublic/v03/a/b` (as sr3
does), and a queue bound to `xpublic` with `v03.#` subscribes to `xpublic/v03/#`.  The
broker vouches for no publisher (Delivery.user_id is empty): on an MQTT pump, who may
publish where is the broker's ACL.
"""
from __future__ import annotations

import collections
import importlib
import logging
import ssl
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from dd.broker.amqp import Delivery, Subscription
from dd.broker import failover
from dd.core.credentials import Url
from dd.core.errors import CERTIFICATE_FIX, BrokerError, BrokerRefusal

paho: Any = None       # paho-mqtt is an extra: dd speaks AMQP without it
PacketTypes: Any = None
Properties: Any = None
_encoding: Any = None   # paho.mqtt.properties: its encoders of strings and lengths
paho_version = ""
try:
    paho = importlib.import_module("paho.mqtt.client")
    PacketTypes = importlib.import_module("paho.mqtt.packettypes").PacketTypes
    _encoding = importlib.import_module("paho.mqtt.properties")
    Properties = _encoding.Properties
    paho_version = importlib.import_module("paho.mqtt").__version__
except ImportError:
    pass

if TYPE_CHECKING:  # the broker knows messages, never how notices are encoded into them
    from dd.core.formats import Message

log = logging.getLogger("dd.broker")

#: scheme -> (paho transport, TLS)
SCHEMES = {"mqtt": ("tcp", False), "mqtts": ("tcp", True), "ws": ("websockets", False),
           "wss": ("websockets", True)}
INSTALL_FIX = "pip install 'metpx-dd[mqtt]', or pip install 'paho-mqtt>=2.1'"
#: MQTT's "never expires" session expiry interval.
NEVER = 0xFFFFFFFF
#: CONNACK reason codes that say retrying with the same settings cannot help.
_REFUSALS = {0x84: "does not speak this MQTT version", 0x85: "refused the client identifier",
             0x86: "refused the user name or password", 0x8C: "refused the authentication method",
             4: "refused the user name or password",
             # Mosquitto answers a wrong password so too.
             0x87: "refused the login: not authorized", 5: "refused the login: not authorized"}
#: What the MQTT 5 CONNACK of a broker speaking only 3.1.1 looks like to paho.
_UNSUPPORTED_VERSION = (0x84, 1)


class _NotMqtt5(BrokerError):
    """The broker refused MQTT 5, or closed the connection before answering it."""


def available() -> None:
    """Raise a one-line BrokerError when paho-mqtt (2.1 or newer) is missing."""
    version = tuple(int(n) for n in paho_version.split(".")[:2]) if paho else ()
    if version < (2, 1):
        found = f"paho-mqtt {paho_version} is too old" if paho else "paho-mqtt is not installed"
        raise BrokerError(f"MQTT brokers need paho-mqtt 2.1 or newer: {found}", fix=INSTALL_FIX)


def topic_name(exchange: str, topic: str) -> str:
    """The MQTT topic a message with AMQP topic `topic` goes on, published to `exchange`."""
    words = [exchange, *topic.split(".")] if topic else [exchange]
    return "/".join(words)


def topic_filter(exchange: str, binding: str) -> str:
    """The MQTT topic filter of an AMQP binding key on `exchange` (`*` is MQTT's `+`)."""
    return topic_name(exchange, ".".join("+" if word == "*" else word for word in binding.split(".")))


def split_topic(name: str) -> tuple[str, str]:
    """(exchange, AMQP topic) of a received MQTT topic: its first level, and the others
    joined by dots (a dot, '*' or '#' inside a level, as sr3 may send, is %-escaped)."""
    first, _, rest = name.partition("/")
    levels = [level.replace(".", "%2E").replace("*", "%2A").replace("#", "%23") for level in rest.split("/")]
    return first, ".".join(levels) if rest else ""


class _Endpoint:
    """One paho client and its network thread, which serves keepalives; paho does not
    reconnect by itself: a lost connection shows as a ConnectionError (an OSError, as
    dd.broker.CONNECTION_ERRORS expects) at the next call, and reopen() connects anew."""

    #: Whether the broker keeps our session (subscriptions, unacknowledged messages) across connections.
    PERSISTENT: bool = False

    def __init__(self, url: Url, *, heartbeat: float, name: str, timeout: float = 10.0,
                 protocol: Optional[int] = None, shuffle: bool = False) -> None:
        available()
        for each in url.every:
            if each.scheme not in SCHEMES:
                raise BrokerError(f"broker {each}: not an MQTT URL", fix="use mqtt://, mqtts://, ws:// or wss://")
        self.endpoints = failover.Endpoints(url, shuffle=shuffle)
        self.heartbeat = heartbeat
        self.name = name
        self.timeout = timeout
        #: paho.MQTTv5, or MQTTv311 (given, or found when the broker speaks nothing newer).
        self.protocol = protocol or paho.MQTTv5
        self.client: Any = None
        self.generation = 0
        self._changed = threading.Condition()
        self._lost: Optional[str] = None     # why the current connection ended, once it has
        self._connack: Any = None

    @property
    def mqtt5(self) -> bool:
        return bool(self.protocol == paho.MQTTv5)

    def client_id(self) -> str:
        return ""

    def session_expiry(self) -> int:
        return 0

    def receive_maximum(self) -> int:
        return 0

    @property
    def url(self) -> Url:
        """The URL of the node connected to (or to be tried next)."""
        return self.endpoints.current

    @property
    def connected(self) -> bool:
        return self.client is not None

    @property
    def limits(self) -> str:
        return "" if self.protocol == paho.MQTTv5 else (
            "speaks MQTT 3.1.1 only: no shared subscriptions (one instance per subscription), no headers")

    def open(self) -> Any:
        if self.client is None:
            self.client = self.endpoints.first_answering(self._speaking)
        return self.client

    def _speaking(self, url: Url) -> Any:
        """A client connected to `url` (the endpoints' current one), in MQTT 5 if it can."""
        try:
            return self._connect()
        except _NotMqtt5:
            if self.protocol != paho.MQTTv5:
                raise
            # A broker of MQTT 3.1.1 (RabbitMQ's plugin): say it once, and speak it.
            log.warning("broker %s speaks MQTT 3.1.1, not 5: no shared subscriptions (one instance "
                        "per subscription) and no message headers", url)
            self.protocol = paho.MQTTv311
            return self._connect()

    def _on_open(self) -> None:
        """Set up after every (re)connection."""

    def _connect(self) -> Any:
        transport, tls = SCHEMES[self.url.scheme]
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id(), protocol=self.protocol,
                             clean_session=None if self.mqtt5 else not self.PERSISTENT, transport=transport,
                             reconnect_on_failure=False, manual_ack=self.PERSISTENT)
        client.max_inflight_messages_set(1000)
        if self.url.user:
            client.username_pw_set(self.url.user, self.url.password)
        if tls:
            # Certificate and host name verified against the system's CAs (or SSL_CERT_FILE's).
            client.tls_set_context(ssl.create_default_context())
        if transport == "websockets":
            client.ws_set_options(path=self.url.path or "/")
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._bind(client)
        self._lost, self._connack = None, None
        # Before the network thread runs: a resumed session's messages come right after CONNACK.
        self.generation += 1
        self._on_open()
        properties = None
        if self.mqtt5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.session_expiry()
            if self.receive_maximum():
                properties.ReceiveMaximum = min(self.receive_maximum(), 65535)
        try:
            client.connect(self.url.host, self.url.port or 1883, keepalive=int(self.heartbeat),
                           clean_start=not self.PERSISTENT if self.mqtt5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                           properties=properties)
        except ssl.SSLCertVerificationError as error:  # before OSError: a subclass
            raise BrokerRefusal(f"broker {self.url}: its TLS certificate is refused: {error.verify_message}",
                                fix=CERTIFICATE_FIX) from None
        except (OSError, ValueError) as error:
            raise BrokerError(f"cannot connect to broker {self.url}: {error or type(error).__name__}",
                              fix="check that the broker is running and the URL is right") from None
        client.loop_start()
        with self._changed:
            self._changed.wait_for(lambda: self._connack is not None or self._lost is not None, self.timeout)
            code, lost = self._connack, self._lost
        if code is not None and not code.is_failure:
            return client
        self._stop(client)
        if code is None:
            # Closed before answering MQTT 5: maybe a broker of MQTT 3.1.1 only.
            kind = _NotMqtt5 if self.mqtt5 and lost is not None else BrokerError
            raise kind(f"cannot connect to broker {self.url}: {lost or 'no answer'}",
                       fix="check that the broker is running and the URL is right")
        if self.mqtt5 and code.value in _UNSUPPORTED_VERSION:
            raise _NotMqtt5(f"broker {self.url} does not speak MQTT 5")
        reason = _REFUSALS.get(code.value, str(code))
        fix = "check the password in credentials.conf, and ask the broker administrator whether the user " \
              "may log in" if code.value in (0x86, 0x87, 4, 5) else "ask the broker administrator"
        raise BrokerRefusal(f"broker {self.url} {reason} (user '{self.url.user}')", fix=fix)

    def _bind(self, client: Any) -> None:
        """Attach the callbacks of this kind of endpoint."""

    def _on_connect(self, client: Any, userdata: Any, flags: Any, code: Any, properties: Any) -> None:
        with self._changed:
            self._connack = code
            self._changed.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, code: Any, properties: Any) -> None:
        with self._changed:
            self._lost = str(code) if code is not None and str(code) != "Success" else "connection closed"
            self._changed.notify_all()

    def check(self) -> None:
        """Raise ConnectionError when the connection is gone."""
        if self.client is None:
            self.open()
        if self._lost is not None:
            raise ConnectionError(f"lost the connection to broker {self.url}: {self._lost}")

    @staticmethod
    def _stop(client: Any) -> None:
        client.disconnect()
        client.loop_stop()

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            self._stop(client)

    def reopen(self, backoff_max: float = 30.0, give_up_after: Optional[float] = None,
               stop: Optional[threading.Event] = None) -> Any:
        """Drop the connection and connect again, to the broker's next node if it has several
        (dd.broker.failover); None, unconnected, once `stop` is set."""
        self.close()
        self.client = self.endpoints.reconnect(self._speaking, backoff_max=backoff_max,
                                               give_up_after=give_up_after, stop=stop)
        return self.client

    def tick(self) -> None:
        """Nothing to do: the network thread sends the keepalives."""

    def has_exchange(self, exchange: str) -> bool:
        return True     # a topic needs no declaring

    def declare_exchange(self, exchange: str) -> None:
        """Nothing to declare: a topic exists once published on."""


class _PublishProperties:
    """A PUBLISH's content type and user properties, as paho sends them: it only calls pack().
    paho's own Properties scans every property MQTT defines at each assignment and each
    pack, a third of a small publish's CPU; these are packed once, with paho's encoders."""

    __slots__ = ("content_type", "headers", "_packed")
    CONTENT_TYPE = b"\x03"     # the property identifiers of MQTT 5 (3.3.2.3.9, 3.3.2.3.7)
    USER_PROPERTY = b"\x26"

    def __init__(self, content_type: str, headers: dict[str, Any]) -> None:
        self.content_type = content_type
        self.headers = [(str(k), str(v)) for k, v in headers.items()]
        self._packed: Optional[bytes] = None

    def pack(self) -> bytes:
        if self._packed is None:
            write = _encoding.writeUTF
            body = self.CONTENT_TYPE + write(self.content_type) + b"".join(
                self.USER_PROPERTY + write(key) + write(value) for key, value in self.headers)
            self._packed = _encoding.VariableByteIntegers.encode(len(body)) + body
        return self._packed

    def __str__(self) -> str:   # paho's debug log
        return f"[ContentType: {self.content_type}, UserProperty: {self.headers}]"


class Publisher(_Endpoint):
    """Publishes at QoS 1; a publish is confirmed by its PUBACK."""

    def __init__(self, url: Url, *, heartbeat: float = 60, name: str = "dd-publisher",
                 protocol: Optional[int] = None, shuffle: bool = False) -> None:
        super().__init__(url, heartbeat=heartbeat, name=name, protocol=protocol, shuffle=shuffle)
        self._pending: dict[int, tuple[Any, str]] = {}   # message id -> (caller's reference, topic)
        self._early: dict[int, Any] = {}       # PUBACKs that came before publish() returned
        self._refused: list[tuple[Any, str, str]] = []     # (reference, topic, reason)
        #: content type -> the properties of a message without headers, made and packed once.
        self._plain: dict[str, _PublishProperties] = {}

    def _on_open(self) -> None:
        self._pending, self._early = {}, {}

    def _bind(self, client: Any) -> None:
        client.on_publish = self._on_publish

    def _on_publish(self, client: Any, userdata: Any, mid: int, code: Any, properties: Any) -> None:
        # paho calls this holding its own lock, which publish() also takes: only ours is taken here.
        with self._changed:
            if mid not in self._pending:
                self._early[mid] = code
            else:
                self._settle(mid, code)
            if not self._pending:   # what wait() waits for: waking it at each PUBACK costs the publisher
                self._changed.notify_all()

    def _settle(self, mid: int, code: Any) -> None:
        reference, topic = self._pending.pop(mid)
        if code is not None and code.is_failure:
            self._refused.append((reference, topic, str(code)))

    def publish(self, exchange: str, message: Message, reference: Any = None) -> None:
        self.check()
        topic = topic_name(exchange, message.topic)
        properties = None
        if self.mqtt5:
            properties = self._plain.get(message.content_type) if not message.headers else None
            if properties is None:
                properties = _PublishProperties(message.content_type, message.headers)
                if not message.headers:
                    self._plain[message.content_type] = properties
        elif message.headers:
            raise BrokerRefusal(f"broker {self.url} speaks MQTT 3.1.1, which carries no headers, and this "
                                f"message has some", fix="choose a post_format without headers (v02 or sr_v03)")
        info = self.client.publish(topic, message.body, qos=1, properties=properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"broker {self.url}: cannot publish: {paho.error_string(info.rc)}")
        with self._changed:
            self._pending[info.mid] = (reference, topic)
            if info.mid in self._early:
                self._settle(info.mid, self._early.pop(info.mid))

    def flush(self) -> None:
        """Nothing held back: paho sends at once."""

    @property
    def unconfirmed(self) -> list[Any]:
        return [reference for reference, _ in self._pending.values()]

    def wait(self, timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending:
                if self._lost is not None:
                    raise ConnectionError(f"lost the connection to broker {self.url}: {self._lost}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerError(f"broker {self.url} did not confirm {len(self._pending)} "
                                      f"message(s) within {timeout:g} s")
                self._changed.wait(remaining)
            refused, self._refused = self._refused, []
        for topic, reason in sorted({(topic, reason) for _, topic, reason in refused}):
            log.error("broker %s refused a message on topic %s from user '%s': %s", self.url, topic,
                      self.url.user, reason)
        return [reference for reference, _, _ in refused]

    def forget_pending(self) -> list[Any]:
        with self._changed:
            lost = self.unconfirmed + [reference for reference, _, _ in self._refused]
            self._pending.clear()
            self._refused = []
        return lost


class Consumer(_Endpoint):
    """Consumes a subscription in a persistent session with manual acknowledgements;
    `instance` tells the processes sharing it apart (each has its own session)."""

    PERSISTENT: bool = True

    def __init__(self, url: Url, subscription: Subscription, *, prefetch: int = 25, heartbeat: float = 60,
                 name: str = "dd-consumer", instance: int = 1, instances: int = 1, protocol: Optional[int] = None,
                 shuffle: bool = False) -> None:
        super().__init__(url, heartbeat=heartbeat, name=name, protocol=protocol, shuffle=shuffle)
        self.subscription = subscription
        self.prefetch = prefetch
        self.instance = instance
        self.instances = instances      # of the configuration: more than one share a subscription
        self._inbox: collections.deque[Delivery] = collections.deque()
        self._granted: Optional[list[Any]] = None

    def client_id(self) -> str:
        return f"{self.subscription.queue}.{self.instance}"

    def session_expiry(self) -> int:
        return int(self.subscription.expire) if self.subscription.expire else NEVER

    def receive_maximum(self) -> int:
        return self.prefetch

    def _bind(self, client: Any) -> None:
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe

    def _on_open(self) -> None:
        self._inbox.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        exchange, topic = split_topic(message.topic)
        properties = getattr(message, "properties", None)
        headers = dict(getattr(properties, "UserProperty", None) or ())
        with self._changed:
            self._inbox.append(Delivery(body=message.payload, headers=headers, topic=topic, exchange=exchange,
                                        user_id="", tag=message.mid if message.qos else 0,
                                        generation=self.generation, redelivered=bool(message.dup)))
            self._changed.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        with self._changed:
            self._granted = None if codes is None else list(codes)
            self._changed.notify_all()

    def filters(self, shared: Optional[bool] = None) -> list[tuple[str, str]]:
        """(topic filter, exchange) of each subscription: shared ones on MQTT 5 when several
        instances share the work.  One instance subscribes plainly in its session: Mosquitto
        (2.0) does not keep shared subscriptions across its restart, and what is published
        before the instance is back would be lost."""
        sub = self.subscription
        exchanges = [sub.exchange] + ([sub.private_exchange] if sub.private_exchange else [])
        if shared is None:
            shared = self.mqtt5 and self.instances > 1
        share = f"$share/{sub.queue}/" if shared else ""
        return [(share + topic_filter(exchange, key), exchange) for exchange in exchanges for key in sub.bindings]

    def declare(self) -> None:
        """Subscribe in the persistent session: from now on the broker keeps what comes for it."""
        client = self.open()
        if not self.mqtt5 and self.instance > 1:
            raise BrokerRefusal(f"broker {self.url} speaks MQTT 3.1.1 only, without shared subscriptions: "
                                f"instance {self.instance} would get every notice the first one gets",
                                fix="set instances 1")
        filters = self.filters()
        self._on_subscribe(client, None, 0, None, None)     # forget an earlier answer
        result, _ = client.subscribe([(topic, 1) for topic, _ in filters])
        if result != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"broker {self.url}: cannot subscribe: {paho.error_string(result)}")
        with self._changed:
            self._changed.wait_for(lambda: self._granted is not None or self._lost is not None, self.timeout)
            granted = self._granted
        if self.mqtt5:
            # Instances went from one to several, or back: the other form would deliver twice.
            shared = self.instances > 1
            client.unsubscribe([topic for topic, _ in self.filters(shared=not shared)])
        if granted is None:
            raise ConnectionError(f"broker {self.url} did not answer the subscription: {self._lost or 'timed out'}")
        for (topic, exchange), code in zip(filters, granted):
            if not code.is_failure:
                continue
            if exchange == self.subscription.private_exchange and exchange != self.subscription.exchange:
                log.warning("user '%s' may not read its private topics %s on %s: private data for it will "
                            "not arrive", self.url.user, topic, self.url)
                continue
            raise BrokerRefusal(f"broker {self.url} refused user '{self.url.user}' the subscription to {topic}: "
                                f"{code}", fix="check the exchange and subtopic options, and the broker's ACL")

    def start(self) -> None:
        self.declare()

    def fetch(self, timeout: float) -> list[Delivery]:
        """What arrives within `timeout` seconds: once one is there, up to half the
        receive window (prefetch), so the broker sends more meanwhile."""
        self.check()
        with self._changed:
            self._changed.wait_for(lambda: self._inbox or self._lost is not None, timeout)
            if not self._inbox and self._lost is not None:
                raise ConnectionError(f"lost the connection to broker {self.url}: {self._lost}")
            size = max(1, self.prefetch // 2)
            return [self._inbox.popleft() for _ in range(min(size, len(self._inbox)))]

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """PUBACK each delivery of this connection; those of an earlier one come again."""
        if self.client is None:
            return
        for delivery in deliveries:
            if delivery.generation == self.generation and delivery.tag:
                self.client.ack(delivery.tag, 1)

    def delete(self) -> None:
        """End the persistent session, and with it the subscription and what waits in it."""
        self.close()
        ending = Consumer(self.url, self.subscription, heartbeat=self.heartbeat, name=self.name,
                          instance=self.instance, instances=self.instances, protocol=self.protocol)
        ending.PERSISTENT = False    # clean start, session expiry 0: the broker forgets the session
        ending.open()
        ending.close()
