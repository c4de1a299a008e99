"""AMQP topics derived from relative paths.

A topic is `<prefix>.<dir>.<dir>...`: one word per directory of the relative
path.  Words are escaped so that the characters AMQP topic matching gives
meaning to ('.', '#', '*'), spaces and non-ASCII names cannot break routing:
every byte of the UTF-8 name outside [A-Za-z0-9_~-] becomes %XX.  Topics are
kept within AMQP's 255-byte limit by dropping the deepest words; subscribers
still get the precise path from the notice for accept/reject.
"""
import functools
import re

MAX_TOPIC_BYTES = 255
_SAFE = re.compile(rb"[A-Za-z0-9_~-]")


@functools.lru_cache(maxsize=4096)
def escape_word(word: str) -> str:
    # Cached: a watcher or a pump names the same few directories in every topic.
    return "".join(
        chr(b) if _SAFE.fullmatch(bytes([b])) else f"%{b:02X}" for b in word.encode("utf-8"))


def for_path(prefix: str, rel_path: str) -> str:
    """The topic a notice about `rel_path` is published on."""
    directories = [w for w in rel_path.split("/")[:-1] if w]
    words = prefix.split(".") + [escape_word(d) for d in directories]
    return _fit(words, len(prefix.split(".")))


def binding(prefix: str, subtopic: str) -> str:
    """The binding key for a subscription: `subtopic` is '/'- or '.'-separated
    directory names, where a word that is exactly '#' or '*' stays a wildcard."""
    separator = "/" if "/" in subtopic else "."
    words = [w if w in ("#", "*") else escape_word(w) for w in subtopic.split(separator) if w]
    return ".".join(prefix.split(".") + words)


def _fit(words: list[str], keep: int) -> str:
    while len(".".join(words).encode()) > MAX_TOPIC_BYTES and len(words) > keep:
        words.pop()
    return ".".join(words)


def verbatim(text: str) -> tuple[str, str]:
    """(exchange, topic) of a topic given whole (options post_topic and topic), with '/'
    between levels as MQTT writes it: its first level is the exchange (an MQTT broker has
    none: dd.broker.mqtt puts the exchange first), the others are the topic's words.
    `+` is a one-level wildcard like `*`.  ValueError when a level is empty or has a dot."""
    levels = text.strip().strip("/").split("/")
    if len(levels) < 2 or not all(levels) or any("." in level for level in levels):
        raise ValueError("levels must be non-empty and without dots, like origin/a/wis2/#")
    return levels[0], ".".join("*" if level == "+" else level for level in levels[1:])
