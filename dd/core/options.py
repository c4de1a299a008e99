"""The one table of options: every option dd understands, declared once.

The parser (dd.core.config), `show`, the man page (dd.cli.manpage) and redaction all
derive from OPTIONS, so adding a row here is all it takes to support an option
everywhere.  Defaults are written as they would be in a config file, so the
man page shows exactly what a user would type; they may use ${BROKER_USER} or
${POST_BROKER_USER}, resolved once the configuration is read (unset when that
broker is unset).  A component may have its own default (component_defaults).
"""
from __future__ import annotations

import dataclasses
import datetime
import decimal
import fractions
import json
import re
import shlex
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from dd.core import checksum, commands, formats, topic
from dd.core.credentials import Url
from dd.core.errors import NoticeError
from dd.core.notice import USER_NAME

#: The commands whose options the table declares.
COMPONENTS = commands.CONFIGURED


@dataclasses.dataclass(frozen=True)
class Kind:
    """A value type: `parse` raises ValueError (with detail, or empty) on bad text."""

    name: str
    expected: str                   # completes "expected ...": a form with an example
    parse: Callable[[str], Any]
    format: Callable[[Any], str] = str


def _number(text: str, units: Mapping[str, int], pattern: str) -> fractions.Fraction:
    match = re.fullmatch(pattern, text.strip(), re.IGNORECASE)
    if not match:
        raise ValueError("")
    number, unit = match.groups()
    # Fraction keeps '1.5M' and '0.1s' exact until the final conversion.
    return fractions.Fraction(number) * units[(unit or "")[:1].lower()]


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DECIMAL = r"(\d+(?:\.\d*)?|\.\d+)\s*"


def parse_size(text: str) -> int:
    """Bytes, from '4096', '512k', '64M', '1.5G' (binary multiples: K=1024)."""
    return int(_number(text, _SIZE_UNITS, _DECIMAL + r"([kmgt](?:i?b)?|b)?"))


def format_size(size: int) -> str:
    for unit in "TGMK":
        factor = _SIZE_UNITS[unit.lower()]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def parse_duration(text: str) -> float:
    """Seconds as a float, from '30', '30s', '5m', '1h', '2d', '1w', '0.5s'."""
    return float(_number(text, _DURATION_UNITS, _DECIMAL + r"([smhdw]?)"))


def format_duration(seconds: float) -> str:
    if seconds == int(seconds):
        whole = int(seconds)
        for unit in "wdhm":
            if whole and whole % _DURATION_UNITS[unit] == 0:
                return f"{whole // _DURATION_UNITS[unit]}{unit}"
        return f"{whole}s"
    # repr round-trips exactly; Decimal spells out its exponent ('1e-05' -> '0.00001').
    return f"{decimal.Decimal(repr(seconds)):f}s"


BOOL_WORDS = {"on": True, "yes": True, "true": True, "1": True,
          "off": False, "no": False, "false": False, "0": False}


def parse_bool(text: str) -> bool:
    try:
        return BOOL_WORDS[text.strip().lower()]
    except KeyError:
        raise ValueError("") from None


def _geometry(text: str) -> dict[str, Any]:
    try:
        return formats.wis2.parse_geometry(text)
    except NoticeError as error:
        raise ValueError(error.message) from None


def _non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("")
    return text.strip()


def _word(text: str) -> str:
    if len(text.split()) != 1:
        raise ValueError("")
    return text.strip()


def _list(text: str) -> tuple[str, ...]:
    words = tuple(w for w in re.split(r"[\s,]+", text) if w)
    if not words:
        raise ValueError("")
    return words


#: What a remote include may never set, whatever include_allow says: the options ruling
#: remote includes themselves.
NEVER_REMOTE = ("include_allow", "include_refresh")


def _option_names(text: str) -> tuple[str, ...]:
    names = _list(text)
    for name in names:
        if name not in BY_NAME:
            raise ValueError(f"unknown option {name!r}")
        if name in NEVER_REMOTE:
            raise ValueError(f"{name} is never left to a remote include")
    return names


def _pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(_non_empty(text))
    except re.error as error:
        raise ValueError(str(error)) from None


def _command(text: str) -> str:
    try:
        shlex.split(_non_empty(text))
    except ValueError as error:
        raise ValueError(str(error)) from None
    return text.strip()


#: How a value names a Python function rather than a command: python:package.module:function.
PYTHON = "python:"
_IDENTIFIER = r"[A-Za-z_]\w*"
_PYTHON_SPEC = re.compile(rf"{PYTHON}({_IDENTIFIER}(?:\.{_IDENTIFIER})*):({_IDENTIFIER})")


def python_spec(text: str) -> tuple[str, str] | None:
    """(module, function) of a python:package.module:function value; None for anything else."""
    match = _PYTHON_SPEC.fullmatch(text.strip())
    return (match[1], match[2]) if match else None


def _plugin(text: str) -> str:
    if python_spec(text) is None:
        raise ValueError("")
    return text.strip()


def _hook(text: str) -> str:
    # Only the python: form is judged as one; a command may be anything shlex can split.
    return _plugin(text) if text.strip().startswith(PYTHON) else _command(text)


def integer(minimum: int = 0) -> Kind:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value
    return Kind("int", f"a whole number of at least {minimum}", parse)


def choice(*values: str) -> Kind:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in values:
            raise ValueError("")
        return value
    return Kind("choice", f"one of {', '.join(values)}", parse)


def url(*schemes: str, example: str, several: bool = False) -> Kind:
    """A URL of one of these schemes; `several`: or several separated by spaces, the nodes of a
    broker's cluster (the value is the first, the others its alternates)."""
    def parse(text: str) -> Url:
        value = Url.parse_several(text) if several else Url.parse(text)
        if any(each.scheme not in schemes for each in value.every):
            raise ValueError(f"scheme must be {' or '.join(schemes)}")
        return value
    if several:
        return Kind("url", f"a URL like {example}, or several separated by spaces", parse,
                    lambda value: " ".join(str(each) for each in value.every))
    return Kind("url", f"a URL like {example}", parse)


def _stream_offset(text: str) -> str | datetime.datetime:
    word = text.strip().lower()
    if word in ("first", "next", "last"):
        return word
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _format_offset(value: str | datetime.datetime) -> str:
    return value.isoformat() if isinstance(value, datetime.datetime) else value


ROLES = ("source", "subscriber", "feeder", "admin")


def _declaration(text: str) -> tuple[str, str]:
    """(role, user name) from 'ROLE NAME'.  Names are plain words because they are put
    into the broker's permission patterns."""
    words = text.split()
    if len(words) != 2:
        raise ValueError("")
    role, name = words
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not USER_NAME.fullmatch(name):
        raise ValueError(f"user name {name!r} may only have letters, digits, _ and -, starting with a "
                         "letter: anything else could widen a permission pattern")
    return role, name


STR = Kind("str", "a non-empty string", _non_empty)
WORD = Kind("str", "a single word, no spaces", _word)
TOPIC = Kind("str", "a topic pattern without spaces, like observations.# or a.*.b", _word)
INT = integer(0)
BOOL = Kind("bool", "on or off (also yes/no, true/false, 1/0)", parse_bool,
            lambda value: "on" if value else "off")
SIZE = Kind("size", "a size like 64M, 512k, 1G or plain bytes", parse_size, format_size)
DURATION = Kind("duration", "a duration like 30s, 5m, 1h, 2d or plain seconds",
                parse_duration, format_duration)
LIST = Kind("list", "words separated by spaces or commas", _list, " ".join)
OPTION_NAMES = Kind("list", "option names separated by spaces or commas", _option_names, " ".join)
PATTERN = Kind("pattern", "a regular expression like .*\\.txt", _pattern,
               lambda value: value.pattern)
COMMAND = Kind("command", "a command line with balanced quotes", _command)
PLUGIN = Kind("function", "python:package.module:function, a function dd_plugins(7) describes", _plugin)
HOOK = Kind("command", "a command line with balanced quotes, or python:package.module:function",
            _hook)
STREAM_OFFSET = Kind("offset", "first, next, last or a time like 2026-12-03T00:00:00Z",
                     _stream_offset, _format_offset)
PATH = Kind("path", "a file or directory path", lambda text: Path(_non_empty(text)))
BROKER = url("amqp", "amqps", "mqtt", "mqtts", "ws", "wss", example="amqps://user@host/ or mqtts://user@host/",
             several=True)


def _verbatim_topic(text: str) -> str:
    topic.verbatim(text)
    return text.strip().strip("/")


#: A whole topic, its levels separated by '/'.
VERBATIM_TOPIC = Kind("str", "a topic with '/' between levels, like origin/a/wis2/ca-eccc-msc/data/core/weather",
                      _verbatim_topic)
DECLARATION = Kind("declaration", "a role and a user name, like: source ann (roles: "
                   f"{', '.join(ROLES)})", _declaration, " ".join)
SERVER = url("http", "https", "sftp", "file", example="https://host/path or sftp://user@host/")
GEOMETRY = Kind("geometry", "a point like '6.15 46.22' or GeoJSON like "
                "{\"type\":\"Polygon\",\"coordinates\":[[[0,0],[1,0],[1,1],[0,0]]]}",
                _geometry, lambda value: json.dumps(value, separators=(",", ":")))
POLLED = url("http", "https", "sftp", "ftp", "ftps", "file", example="https://host/path/ or sftp://user@host/path/")


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    kind: Kind
    default: str | None             # as written in a config file; None = unset
    help: str                       # one line: --help, show and the man page
    components: frozenset[str]      # of COMPONENTS that use it
    sensitive: bool = False         # value never shown (URLs hide passwords anyway)
    ordered: bool = False           # meaning depends on its position among accept/reject
    repeat: bool = False            # each line adds a value instead of replacing
    component_defaults: Mapping[str, str] = dataclasses.field(
        default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "component_defaults",
                           MappingProxyType(dict(self.component_defaults)))

    def default_for(self, component: str) -> str | None:
        return self.component_defaults.get(component, self.default)


ALL = " ".join(commands.COMPONENTS)
CONSUMERS = "subscribe sara shovel sender"
DELIVERY = "subscribe sara"                    # into a local tree
SENDING = DELIVERY + " sender"                 # ... or to a destination (dd.delivery.send)
POSTERS = "post subscribe watch poll sara shovel sender"   # dd_subscribe re-announces what it delivers
DAEMONS = "subscribe watch poll sara shovel sender"
READERS = CONSUMERS + " log"                   # dd_log reads log messages as consumers read notices


def _option(name: str, kind: Kind, default: str | None, components: str, help: str, **flags: Any) -> Option:
    return Option(name, kind, default, help, frozenset(components.split()), **flags)


OPTIONS = (
    # Where notices come from.
    _option("broker", BROKER, None, READERS,
            "broker to consume notices (dd_log: log messages) from; several URLs separated by spaces are "
            "the nodes of one cluster (broker_failover); passwords come from credentials.conf"),
    _option("exchange", WORD, "xpublic", READERS,
            "exchange the queue is bound to; dd_log reads xr_<broker user>, where the pump routes "
            "your log messages", component_defaults={"log": "xr_${BROKER_USER}"}),
    _option("topic_prefix", WORD, "v02.post", READERS,
            "first words of the topics subscribed to (the notice format's version)",
            component_defaults={"log": "v02.log"}),
    _option("subtopic", TOPIC, "#", READERS,
            "topic below topic_prefix to bind the queue to (* is one word, # any number); "
            "repeat for several bindings", repeat=True),
    _option("topic", VERBATIM_TOPIC, None, READERS,
            "the whole topic subscribed to, levels separated by /, instead of exchange, "
            "topic_prefix and subtopic: its first level is the exchange (on MQTT, simply the topic: "
            "topic cache/a/wis2/#); + or * is one level, # any number"),
    _option("queue", WORD, None, READERS,
            "queue name; unset: q_<broker user>.<component>.<config> with a random suffix, "
            "kept in the state directory"),
    _option("queue_type", choice("classic", "quorum", "stream"), "classic", READERS + " audit",
            "kind of queue declared: classic (one node holds it), quorum (replicated on the cluster's "
            "nodes: nothing confirmed is lost when one dies; dd_cluster(7)) or stream (an append-only "
            "log read from stream_offset, kept for message_ttl, for replaying notices into a new "
            "subscriber); a queue keeps its type: change it and run cleanup; dd_audit: quorum declares "
            "the vhost's policy dd-quorum, once for the cluster, which spreads the q_ queues' leaders "
            "over its nodes (queue-leader-locator balanced)"),
    _option("expire", DURATION, "5m", READERS + " audit",
            "the broker deletes the queue after it has had no consumer this long "
            "(Sarracenia's default; on MQTT, the session expiry); raise it, e.g. to 1d, when notices "
            "must survive outages; "
            "classic: renewed by each declaration and consumer; quorum: the same, checked by the broker "
            "every few seconds, so the queue may outlive it by that much; stream: not used, a stream "
            "stays until cleanup removes it; "
            "dd_audit cleanup removes q_ queues idle this long", component_defaults={"audit": "1d", "log": "1d"}),
    _option("message_ttl", DURATION, None, CONSUMERS,
            "the broker drops notices that waited in the queue this long (stream: that were appended "
            "this long ago); unset: never"),
    _option("prefetch", INT, "200", READERS,
            "notices the broker may send each instance ahead of its acknowledgements; "
            "an instance works on half of them at a time while the rest wait ready; per consumer, "
            "as quorum queues require"),
    _option("delivery_limit", INT, "0", SENDING,
            "a notice the broker has delivered more than this many times (quorum queues count them; "
            "a classic queue only says whether it was delivered before) is not worked on again from "
            "the queue: it goes to the retry store with an error in the log, so a notice whose work "
            "crashes the process does not crash every instance in turn; 0: no limit"),
    _option("stream_offset", STREAM_OFFSET, "next", READERS,
            "where a stream queue (queue_type stream) is read from at each start: first (all it "
            "holds), next (only what arrives from now on), last (from its last chunk) or a time "
            "(what arrived since, e.g. 2026-12-03T00:00:00Z); notices read again are recognised "
            "as duplicates by the receiver"),
    _option("max_notice_size", SIZE, "1M", READERS,
            "larger notices are rejected unread"),
    _option("broker_failover", choice("order", "shuffle"), "order", ALL + " log",
            "which of a broker option's several URLs (the nodes of a cluster, separated by spaces) is "
            "tried first: order, as written (every instance on the first that answers), or shuffle "
            "(instances spread over the nodes); a lost connection moves to the next URL within seconds, "
            "declares again what it needs and publishes again what was not confirmed (dd_cluster(7))"),
    _option("heartbeat", DURATION, "60s", ALL + " log",
            "AMQP heartbeat (MQTT keepalive) interval: a connection silent for two intervals is "
            "dropped; 0 disables"),
    _option("instances", integer(1), "1", CONSUMERS, "processes sharing the queue"),
    # Which files, delivered where: position matters (see ORDER MATTERS).
    _option("accept", PATTERN, None, ALL,
            "take paths whose relative path matches this regular expression, delivered with "
            "the directory, mirror, strip and flatten set above it; first match wins",
            ordered=True, repeat=True),
    _option("reject", PATTERN, None, ALL,
            "skip paths whose relative path matches this regular expression; first match wins",
            ordered=True, repeat=True),
    _option("accept_unmatched", BOOL, None, ALL,
            "take paths no accept or reject matches, delivered with the last directory, mirror, "
            "strip and flatten; unset: on when there is no accept line, else off"),
    _option("directory", PATH, ".", SENDING,
            "directory files are delivered into, for the accept lines below it; a relative "
            "one is taken from the working directory (dd_sender: from the destination's, and "
            "it must be relative)", ordered=True),
    _option("mirror", BOOL, "on", SENDING,
            "recreate the relative path's directories below directory; off puts every file "
            "straight into directory", ordered=True),
    _option("strip", INT, "0", SENDING,
            "leading directories removed from the relative path before delivery", ordered=True),
    _option("flatten", STR, "/", SENDING,
            "the relative path's directories are joined with this string into one file name; "
            "the default / keeps them as directories", ordered=True),
    # Remote includes (include https://host/path.conf).
    _option("include_refresh", DURATION, "1h", " ".join(COMPONENTS),
            "a remote include's cached copy older than this is checked with its server (ETag, "
            "Last-Modified) when the configuration is read; the server unreachable, the cached copy "
            "is used and a warning says so; in effect from where it is set (default.conf, or above the "
            "include line)"),
    _option("include_allow", OPTION_NAMES, "exchange topic_prefix subtopic accept reject accept_unmatched",
            " ".join(COMPONENTS),
            "options a remote include may set; any other line of the snippet stops the configuration "
            "loading; the default lets it choose what to receive but not where it goes nor what runs: add "
            "directory, on_file, on_notice, broker, https_ca_file and the like only for a source you trust "
            "with your account; include_allow and include_refresh themselves are never left to a snippet"),
    # Delivery.
    _option("allowed_schemes", LIST, "http https sftp ftp ftps", SENDING,
            "URL schemes files may be downloaded with; add file only for a trusted local pump"),
    _option("allowed_hosts", LIST, None, SENDING,
            "hosts files may be downloaded from (as in the notices' base URLs); unset: any"),
    _option("threads", integer(1), "4", SENDING,
            "transfers one instance runs at once when they wait more than they compute "
            "(distant servers); the broker is still served by one thread"),
    _option("sftp_key", PATH, None, SENDING + " poll",
            "private key file (OpenSSH format) to log in to SFTP servers with, besides the SSH "
            "agent's and ~/.ssh's keys (a relay ingesting a source's exchange uses this one only)"),
    _option("known_hosts", PATH, None, SENDING + " poll",
            "a known_hosts file of SFTP servers' host keys trusted besides ~/.ssh/known_hosts and "
            "/etc/ssh/ssh_known_hosts; unknown host keys are refused, never added"),
    _option("https_ca_file", PATH, None, SENDING + " poll",
            "CA certificates (PEM) that HTTPS servers' certificates are checked against instead of "
            "the system's (or SSL_CERT_FILE's), remote includes' too when set above the include line; "
            "certificates are always checked"),
    _option("ftps_ca_file", PATH, None, SENDING + " poll",
            "CA certificates (PEM) that FTPS servers' certificates are checked against instead of "
            "the system's (or SSL_CERT_FILE's); certificates are always checked"),
    _option("timeout", DURATION, "30s", SENDING + " poll",
            "a transfer making no progress for this long fails and is retried"),
    _option("parallel", integer(1), "1", DELIVERY,
            "connections one download of a big whole file is fetched over at once, in pieces of 4 to "
            "64 MiB written into its one temporary file, each connection asking for its next piece "
            "while the last is still arriving (HTTP pipelining; one at a time through a proxy); a "
            "server answering with the whole file instead of a range gets one connection; on a long "
            "round trip each TCP stream carries at most its window per round trip, and N streams "
            "carry N of them"),
    _option("rate_max", SIZE, "0", SENDING,
            "download (dd_sender: sending) bandwidth limit in bytes per second, e.g. 10M; 0: unlimited"),
    _option("rate_store", url("redis", "rediss", example="redis://host:6379/0"), None, SENDING,
            "a Redis (it may be nodupe_store's) keeping rate_max as one budget for every instance on "
            "every host of the same configuration (component and name), so that together they move "
            "rate_max, not rate_max each; Redis not answering, each process paces itself alone until it "
            "does (an error says so); unset: each process has rate_max of its own"),
    _option("destination", url("sftp", "ftp", "ftps", "file", example="sftp://user@host/dir"), None, "sender",
            "where dd_sender puts files: a directory on an SFTP, FTP or FTPS server (its absolute path "
            "on the server) or a local one (file:/dir); its password comes from credentials.conf"),
    _option("verify_sent", BOOL, "off", "sender",
            "read each file sent back from the destination and compare its checksum with the data "
            "sent, before renaming it into place; off: its size is compared"),
    _option("fsync", BOOL, "off", DELIVERY,
            "flush each delivered file to disk before reporting it delivered"),
    _option("on_notice", PLUGIN, None, SENDING,
            "Python function (dd_plugins(7)) given each notice before anything is done for it: it "
            "accepts it, refuses it with a reason (403 [on_notice]) or returns a changed notice"),
    _option("on_file", HOOK, None, DELIVERY,
            "command run after each delivery, with the delivered file's path as last argument, or "
            "a Python function (dd_plugins(7)) that accepts the file or refuses it (it is removed, "
            "403 [on_file]); at least once: after a crash, or with on_file_failure retry, it runs again"),
    _option("on_file_timeout", DURATION, "5m", DELIVERY,
            "an on_file command still running after this long is killed with every process it "
            "started (SIGTERM, then SIGKILL 5 s later) and counts as failed (on_file_failure); 5m "
            "leaves room for real work on a big file, yet a command that hangs holds up the files "
            "behind it for minutes, not for ever; 0: no limit"),
    _option("on_file_failure", choice("log", "retry"), "log", DELIVERY,
            "an on_file command that fails, cannot run or runs out of time, or a function that raises, "
            "is logged and the file counts as delivered (log), or the delivery fails (500 [on_file]): "
            "its notice is kept in the retry store and on_file runs again when it is retried (retry)"),
    _option("nodupe_ttl", DURATION, "5m", SENDING,
            "a notice for a path and checksum already handled this recently, by any instance "
            "or configuration delivering into the same directory (with nodupe_store: by any instance, "
            "on any host, of the same configuration), is skipped; 0 disables (the "
            "default of dd_subscribe, which recognises a file already in place by its checksum)",
            component_defaults={"subscribe": "0"}),
    _option("nodupe_store", url("redis", "rediss", example="redis://host:6379/0"), None, SENDING + " poll",
            "a Redis (database number as its path; password from credentials.conf) holding the "
            "duplicate store instead of this host's SQLite file, so that the nodes of a pump consuming "
            "one queue handle each notice once: shared by every instance on every host of the same "
            "configuration (component and name); a copy another node is handling is retried, a notice "
            "Redis does not answer for is kept for retry; unset: the SQLite file. dd_poll keeps there "
            "both its claims and what it announced of each tree, shared by every poller of the "
            "post_broker user on every host: the tree is announced once, whichever node polls it"),
    _option("retry_ttl", DURATION, "1d", CONSUMERS,
            "a notice whose transfer failed is kept in the instance's retry store and tried again "
            "for this long, then given up and logged"),
    _option("retry_delay", DURATION, "10s", CONSUMERS,
            "first retry of a failed transfer after this long; each further one waits twice as "
            "long, at most 10m"),
    _option("relay_readers", LIST, None, "sara",
            "users who may fetch every private file from this pump's data server besides its "
            "readers: the feeders of the pumps downstream, so private data can travel on"),
    _option("gateway_for", LIST, None, "sara",
            "clusters reachable through this relay besides its own cluster: it takes a notice "
            "only if one of the notice's to_clusters is among them (or names none)"),
    _option("cluster", WORD, None, "post watch poll sara shovel",
            "name of this cluster: notices posted here come from it, and notices whose "
            "to_clusters leave it out are not forwarded"),
    # Posting.
    _option("post_broker", BROKER, None, POSTERS,
            "broker notices are published to; several URLs separated by spaces are the nodes of one "
            "cluster (broker_failover); passwords come from credentials.conf"),
    _option("post_exchange", WORD, "xpublic", POSTERS,
            "exchange notices are published to; dd_post, dd_watch and dd_poll default to "
            "xs_<post_broker user>, the exchange a broker grants each source",
            component_defaults={"post": "xs_${POST_BROKER_USER}",
                                "watch": "xs_${POST_BROKER_USER}",
                                "poll": "xs_${POST_BROKER_USER}"}),
    _option("post_topic_prefix", WORD, None, POSTERS,
            "first words of the topics published on; unset: the format's own "
            "(v02.post, or v03 for sr_v03); with post_format wis2 the dataset's whole WIS2 topic "
            "(levels between / or .), its first level the exchange; unset on a relay, the one each "
            "message came on"),
    _option("post_topic", VERBATIM_TOPIC, None, POSTERS,
            "the whole topic every notice is published on, levels separated by /, instead of "
            "post_exchange, post_topic_prefix and the file's directories: its first level is the "
            "exchange (on MQTT, simply the topic: a WIS2 dataset's origin/a/wis2/...)"),
    _option("post_format", choice(*formats.FORMATS), formats.DEFAULT, POSTERS,
            "format of published notices: dd's v02 JSON, Sarracenia's v02 or v03, or a WMO WIS2 "
            "notification message (wis2: post_topic, or post_topic_prefix, is then the dataset's "
            "WIS2 topic, origin/a/wis2/<centre-id>/data/core/<discipline>/...)"),
    _option("wis_geometry", GEOMETRY, None, POSTERS,
            "with post_format wis2: where the data is about, 'LONGITUDE LATITUDE' or a GeoJSON "
            "Point or Polygon; unset: null (a relay keeps the one it received)"),
    _option("wis_inline", BOOL, "off", POSTERS,
            "with post_format wis2: put a file's data in the message (properties.content) too, "
            "when its encoded form is at most 4096 bytes and the message stays within 8 KiB"),
    _option("wis_global_cache", WORD, None, "sara",
            "with post_format wis2: act as a WIS2 global cache with this centre id: the copies "
            "are announced on cache/a/wis2/..., with new ids, and carry properties.global-cache"),
    _option("post_base_url", SERVER, None, "post subscribe watch sara sender",
            "URL the posted files are downloaded from; a file's path below post_base_dir "
            "(dd_sender: below destination) is appended to it"),
    _option("post_base_dir", PATH, None, "post subscribe watch sara",
            "local directory served as post_base_url; posted files must be below it "
            "(dd_subscribe: unset, the accept line's directory)"),
    _option("post_timeout", DURATION, "30s", POSTERS,
            "how long to wait for the broker to confirm a published notice"),
    _option("to_clusters", LIST, None, "post watch poll sara shovel",
            "clusters published notices are destined for; unset: the notice names none"),
    _option("readers", LIST, None, "post watch",
            "make what is posted private: pumps serve it only to these users (and their own "
            "relays), and it travels only in dd's v02 format"),
    _option("source", WORD, "${POST_BROKER_USER}", "post watch poll",
            "name of the source publishing; unset: the post_broker user"),
    _option("checksum", choice(*checksum.METHODS), checksum.DEFAULT, "post subscribe watch sara",
            "checksum of posted files, and of downloads whose notice has none; name sums the "
            "relative path instead of the data, none omits it"),
    _option("blocksize", SIZE, "1", "post watch",
            "files larger than this are posted in parts of this size; 1: never split, "
            "0: chosen by file size (parts pay where several instances share a slow link)"),
    _option("path", PATH, None, "post watch",
            "file or directory to post (dd_post, which also takes them as arguments) or watch "
            "(dd_watch); repeat for several", repeat=True),
    # Polling a remote tree (dd_poll).
    _option("poll_url", POLLED, None, "poll",
            "directory whose tree is listed and announced: an http(s) autoindex page (nginx's or "
            "Apache's), sftp, ftp(s) or file; notices point at it, so subscribers download from it"),
    _option("poll_interval", DURATION, "5m", "poll",
            "time from the start of one listing of poll_url to the start of the next"),
    _option("poll_first", choice("announce", "skip"), "announce", "poll",
            "what the first listing of a tree does: announce every file in it, or take them as "
            "announced and announce only what changes afterwards"),
    _option("route_logs", BOOL, "off", "shovel",
            "be the pump's log router: read log messages (exchange xreport, topic_prefix v02.log; "
            "on MQTT, topic +/v02/log/#), keep those published by the consumer they name (on MQTT, "
            "the owner of xs_<user>/, as the broker's ACL says) about a notice this pump relayed to "
            "it (log_index), and copy each to xr_<its source>"),
    _option("report_upstream", BROKER, None, "sara shovel",
            "dd_sara: the pump whose sender pushes here the notices this relay reads (from the "
            "exchange of that pump's feeder): they keep their source, and its consumers' log "
            "messages go back there (dd_sender(1)); log router: rarely needed, log messages go back "
            "to the pump their notice came from as the log index says; this pump takes those whose "
            "source posted on another cluster when the index names no pump (entries older relays "
            "recorded); its password comes from credentials.conf"),
    _option("report_upstream_exchange", WORD, None, "sara shovel",
            "exchange on report_upstream that log messages go to; unset: "
            "xs_<report_upstream user>"),
    _option("report_feeders", LIST, None, "shovel",
            "log router: users (the downstream pumps) whose forwarded log messages are taken "
            "whatever consumer they name"),
    _option("log_index", PATH, None, "sara shovel",
            "the log index: what this pump's relays announced and ingested, and who may report on it; "
            "the log router routes only log messages it matches (dd_log(7)); unset: log_index.sqlite "
            "in the state directory, shared by the account's relays and router"),
    _option("log_index_window", DURATION, "7d", "sara shovel",
            "how long an announcement stays in the log index: a log message about a notice announced "
            "longer ago is refused as forged; set the same for relays and router (default.conf)"),
    _option("log_index_entries", integer(1), "5000000", "sara shovel",
            "most announcements the log index holds, about 90 bytes each; the oldest go first"),
    # A pump's users and permissions (dd_audit, admin.conf).
    _option("admin", BROKER, None, "audit",
            "the pump's broker and virtual host, with its administrator as user: "
            "amqp://USER@HOST/VHOST; the password comes from credentials.conf"),
    _option("declare", DECLARATION, None, "audit",
            "a user of the pump and its role; its password comes from credentials.conf; repeat "
            "for every user", repeat=True),
    _option("management_url", url("http", "https", example="http://localhost:15672/"), None, "audit web",
            "RabbitMQ's management API; unset: port 15672 of the admin broker's host (the console: of "
            "web_broker's host)"),
    _option("queue_limit", INT, "0", "audit",
            "dd_audit cleanup removes q_ queues holding more notices than this; 0: no limit"),
    # The pump (dd_sara).
    _option("data_server_port", integer(1), None, "sara",
            "port of the data server (nginx) dd_sara start runs for post_base_dir, else directory; "
            "unset: none, serve the tree yourself"),
    _option("data_server_host", WORD, "127.0.0.1", "sara",
            "address the data server listens on; 0.0.0.0 for every interface (private data is then "
            "served over HTTPS only: set data_server_certificate)"),
    _option("data_server_certificate", PATH, None, "sara",
            "certificate (PEM, with its chain) of the data server: it serves HTTPS on data_server_port, "
            "and post_base_url must announce https://; unset: plain HTTP"),
    _option("data_server_key", PATH, None, "sara",
            "private key (PEM) of data_server_certificate, readable by the user who runs dd_sara only"),
    _option("data_server_user", WORD, "www-data", "sara",
            "user the data server's workers run as when dd_sara runs as root; it must be able to reach "
            "the tree, and private data is readable by its group only; run by another user, the "
            "workers run as that user"),
    _option("data_server_websocket", url("ws", example="ws://127.0.0.1:15675/ws"), None, "sara",
            "the broker's MQTT-over-WebSocket listener (RabbitMQ's web-MQTT plugin), proxied by the "
            "data server at the same path, so that MQTT subscribers reach the broker through the data "
            "server's port: wss://HOST:data_server_port/ws with data_server_certificate, the way "
            "through a firewall that passes only HTTPS"),
    _option("retention", DURATION, None, "sara",
            "files that arrived longer ago than this are deleted from the directory trees, "
            "e.g. 7d; unset: kept forever"),
    _option("retention_announce", BOOL, "off", "sara",
            "announce retention's deletions on post_exchange, so downstream deletes them too"),
    # Logging.
    _option("log_level", choice("debug", "info", "warning", "error", "critical"), "info", ALL,
            "least severe messages logged"),
    _option("log_format", choice("text", "json"), "text", ALL,
            "text: a line for people; json: one JSON object a line for log stacks, with time "
            "(ISO 8601, UTC), level, component, configuration, instance, logger, message, and "
            "rel_path when the message is about one notice"),
    _option("log_days", INT, "5", DAEMONS,
            "days of rotated daily logs kept"),
    _option("log_reports", BOOL, "on", SENDING,
            "publish a log message (dd_log(7)) for each notice acted on, so that its outcome "
            "flows back to the notice's source"),
    _option("report_exchange", WORD, "xs_${BROKER_USER}", SENDING,
            "exchange of the consuming broker that log messages are published to; the pump "
            "grants each user xs_<user> and routes log messages from there to their source"),
    # Monitoring: the thresholds of `dd_ctl check`, per configuration.
    _option("check_backlog", INT, "1000", CONSUMERS,
            "dd_ctl check warns when more notices than this wait in the queue"),
    _option("check_backlog_critical", INT, "10000", CONSUMERS,
            "dd_ctl check is critical when more notices than this wait in the queue"),
    _option("check_idle", DURATION, None, DAEMONS,
            "dd_ctl check warns when a running configuration has received nothing for this long; "
            "unset: never (quiet feeds are normal)"),
    # The states the web console (dd_ctl web) shows, per configuration.
    _option("state_hung", DURATION, "1m", DAEMONS,
            "the console calls a running configuration hung when no instance has written its metrics for "
            "this long (they are written every 5 s)"),
    _option("state_idle", DURATION, "15m", DAEMONS,
            "the console calls a running configuration idle when it has received nothing for this long"),
    _option("state_lag", DURATION, "5m", CONSUMERS,
            "the console calls a configuration lagging when the oldest notice in its queue was posted longer "
            "ago than this, or its backlog is over check_backlog"),
    _option("state_errors", integer(1), "10", DAEMONS,
            "the console calls a configuration failing when it logged this many errors in the last hour"),
    _option("late_after", DURATION, None, DAEMONS,
            "the console and dd_ctl status --json show a running configuration's last notice received and "
            "last file or notice sent as late when it is older than this (or, none since it started, its "
            "start); unset: never late"),
    # The web console (dd_ctl web, config web/console.conf) and the provenance store it searches.
    _option("web_port", integer(1), "8470", "web",
            "port the web console listens on"),
    _option("web_host", WORD, "127.0.0.1", "web",
            "address the web console listens on; any other than a loopback one needs web_certificate "
            "and web_key"),
    _option("web_certificate", PATH, None, "web",
            "certificate (PEM, with its chain) of the web console: it serves HTTPS; unset: plain HTTP, "
            "on a loopback address only"),
    _option("web_key", PATH, None, "web",
            "private key (PEM) of web_certificate, readable by the console's user only"),
    _option("web_broker", BROKER, None, "web",
            "the pump's broker and virtual host: amqp://ADMIN@HOST/VHOST; a user signs in to the console "
            "with the broker user and password it has there (the console connects to check them), and "
            "ADMIN's password (credentials.conf) reads the management API"),
    _option("web_admins", LIST, None, "web",
            "broker users who see everything in the console; any other user who signs in sees the "
            "provenance of its own files only; unset: web_broker's user"),
    _option("provenance_file", PATH, None, "shovel web log",
            "the provenance store: the log messages the log router routed, searched by the console and "
            "dd_log --trace; unset: provenance.sqlite in the state directory"),
    _option("provenance_days", DURATION, "7d", "shovel",
            "the log router forgets log messages older than this from the provenance store"),
    _option("provenance_entries", integer(1), "1000000", "shovel",
            "most log messages the provenance store holds, about 300 bytes each; the oldest go first"),
)

BY_NAME = {option.name: option for option in OPTIONS}
