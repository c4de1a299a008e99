"""Signing in to the console: a user is who the broker says it is.

A user signs in with its broker user and password; the console checks them by opening an
AMQP connection to web_broker's virtual host as that user (and closes it at once).  The
web_admins see everything; any other user sees the provenance of its own files only (the
log messages whose source it is).  Nothing else is stored: the signed session cookie
holds the user's name, its password is never kept.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import flask

from dd import broker
from dd.core.errors import BrokerError, BrokerRefusal
from dd.core.notice import USER_NAME

#: A failed sign-in waits this long before it answers, so passwords are not tried fast.
REFUSAL_DELAY = 1.0


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    admin: bool

    def sources(self) -> frozenset[str] | None:
        """Whose provenance this user may see: None for everyone's."""
        return None if self.admin else frozenset({self.name})


def admins(cfg: Any) -> frozenset[str]:
    if cfg.web_admins:
        return frozenset(cfg.web_admins)
    return frozenset({cfg.web_broker.user}) if cfg.web_broker is not None and cfg.web_broker.user else frozenset()


def check(cfg: Any, name: str, password: str) -> str | None:
    """None when the broker accepts `name` and `password` on web_broker's virtual host, else why not."""
    if cfg.web_broker is None:
        return "the console has no web_broker to check sign-ins with"
    if not USER_NAME.fullmatch(name) or not password:
        return "wrong user or password"
    try:
        connection = broker.connect(cfg.web_broker.with_password(password, user=name), timeout=5.0,
                                    name="dd console sign-in")
    except BrokerRefusal:
        time.sleep(REFUSAL_DELAY)
        return "wrong user or password"
    except BrokerError as error:
        return f"cannot check the password: {error}"
    broker.close_quietly(connection)
    return None


class _Recent:
    """Basic-authentication sign-ins the broker accepted lately: Prometheus sends them with
    every scrape, and the broker need not be asked each time."""

    TTL = 300.0

    def __init__(self) -> None:
        self._until: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()

    def check(self, cfg: Any, name: str, password: str) -> bool:
        key = (name, hashlib.sha256(password.encode()).digest())
        now = time.monotonic()
        with self._lock:
            if self._until.get(key, 0.0) > now:
                return True
        if check(cfg, name, password) is not None:
            return False
        with self._lock:
            self._until = {k: t for k, t in self._until.items() if t > now}
            self._until[key] = now + self.TTL
        return True


_recent = _Recent()


def basic(cfg: Any, authorization: Any) -> User | None:
    """The user of an HTTP basic Authorization header the broker accepts, or None."""
    if authorization is None or authorization.type != "basic" or not authorization.username:
        return None
    name, password = authorization.username, authorization.password or ""
    if not _recent.check(cfg, name, password):
        return None
    return User(name, name in flask.current_app.config["DD_ADMINS"])


def current() -> User | None:
    name = flask.session.get("user")
    if not isinstance(name, str):
        return None
    return User(name, name in flask.current_app.config["DD_ADMINS"])


def required(admin: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A view only a signed-in user (`admin`: an administrator) may see; the others are
    refused: 401 with the sign-in form, or 403."""
    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            user = current()
            if user is None:
                return flask.render_template("signin.html", error="sign in first",
                                             target=flask.request.full_path), HTTPStatus.UNAUTHORIZED
            if admin and not user.admin:
                return flask.render_template("refused.html"), HTTPStatus.FORBIDDEN
            return view(*args, **kwargs)
        return guarded
    return decorate
