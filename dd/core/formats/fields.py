"""Typed access to fields of a decoded message, with errors that name the field."""
from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from typing import Any, TypeVar, overload

from dd.core.errors import NoticeError

_MISSING = object()
_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
_T = TypeVar("_T")
_D = TypeVar("_D")


def load_json(body: bytes) -> dict[str, Any]:
    """Parse a JSON object body; anything else is a named error."""
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        raise NoticeError("notice is not valid UTF-8", rule="encoding") from None
    except ValueError as error:
        raise NoticeError(f"notice is not valid JSON: {error}", rule="json") from None
    except RecursionError:
        raise NoticeError("notice JSON is nested too deeply", rule="nesting") from None
    if not isinstance(value, dict):
        raise NoticeError("notice must be a JSON object", rule="json")
    return value


def top_level(body: bytes) -> dict[str, Any] | None:
    """The JSON object a body holds, or None when it does not hold one: for recognising
    formats by their keys, never by bytes that a value could also contain."""
    if body.lstrip()[:1] != b"{":
        return None
    try:
        return load_json(body)
    except NoticeError:
        return None


@overload
def take(fields: dict[str, Any], name: str, kind: type[_T]) -> _T: ...
@overload
def take(fields: dict[str, Any], name: str, kind: type[_T], default: _D) -> _T | _D: ...


def take(fields: dict[str, Any], name: str, kind: type[Any], default: Any = _MISSING) -> Any:
    """Pop `name` from `fields`, checking its JSON type; missing is an error unless defaulted."""
    value = fields.pop(name, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise NoticeError(f"notice has no '{name}' field", rule="missing-field")
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NoticeError(f"notice field '{name}' must be {_TYPE_NAMES[kind]}, not {value!r:.60}",
                          rule="type")
    return value


def parse_time(text: str, name: str, formats: Iterable[str]) -> datetime.datetime:
    for fmt in formats:
        try:
            return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
    raise NoticeError(f"notice field '{name}' is not a time: {text!r:.40}", rule="time")


def parse_mode(text: str, name: str = "mode") -> int:
    try:
        return int(text, 8)
    except (TypeError, ValueError):
        raise NoticeError(f"notice field '{name}' is not an octal mode: {text!r:.20}",
                          rule="mode") from None
