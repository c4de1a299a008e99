"""The console's Flask application, and serving it (cheroot: HTTP, or HTTPS with web_certificate).

Every page needs a signed-in user (dd.admin.console.auth).  It listens on a loopback
address unless web_certificate, web_key and web_broker are set: a console reachable from
elsewhere speaks TLS only and signs everyone in.
"""
from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flask
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from dd.admin import shown
from dd.admin.console import auth, overview, pages
from dd.admin.console.sampler import Sampler
from dd.core.errors import ConfigError
from dd.pump import dataserver, provenance
from dd.store import history

log = logging.getLogger("dd.console")
HISTORY_NAME = "console_history.sqlite"


def make_app(cfg: Any, env: Any, on_request: Callable[[], None] | None = None) -> flask.Flask:
    """The application for the console configured by `cfg`, reading `env`'s directories;
    `on_request` is called after each request (dd.admin.console.service counts them)."""
    app = flask.Flask(__name__)
    tls = cfg.web_certificate is not None
    app.config.update(
        # Sessions end with the process: a restart signs everyone out, and no secret is stored.
        SECRET_KEY=secrets.token_bytes(32), SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=tls, SESSION_COOKIE_NAME="dd_console", DD_CFG=cfg, DD_ENV=env,
        DD_ADMINS=auth.admins(cfg), DD_PROVENANCE=provenance.reader(cfg, env.state_dir),
        DD_HISTORY=history.History(Path(env.state_dir) / HISTORY_NAME))
    app.register_blueprint(pages.blueprint)
    # What came from the wire is shown as dd_log shows it: no name passes for another.
    app.jinja_env.filters.update(name=shown.name, text=shown.text)

    @app.context_processor
    def _helpers() -> dict[str, Any]:
        return dict(user=auth.current(), age=overview.age, clock=overview.clock_time, now=env.clock())

    @app.after_request
    def _headers(response: flask.Response) -> flask.Response:
        # Everything the pages use comes from here: no other origin may be reached from them.
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        if on_request is not None:
            on_request()
        return response
    return app


def check(cfg: Any) -> None:
    """ConfigError when the console would listen beyond loopback without TLS or sign-in."""
    if not dataserver.loopback(cfg.web_host):
        missing = [name for name in ("web_certificate", "web_key", "web_broker") if getattr(cfg, name) is None]
        if missing:
            raise ConfigError(f"the console would listen on {cfg.web_host} without {' and '.join(missing)}",
                              fix="set web_certificate, web_key and web_broker, or keep web_host 127.0.0.1")
    if (cfg.web_certificate is None) != (cfg.web_key is None):
        raise ConfigError("web_certificate and web_key go together", fix="set both, or neither")
    if cfg.web_broker is None:
        raise ConfigError("the console needs web_broker to sign users in",
                          fix="set web_broker amqp://ADMIN@HOST/VHOST in web/console.conf")


class Console:
    """The console's server and its sampler, started and stopped together."""

    def __init__(self, cfg: Any, env: Any, on_request: Callable[[], None] | None = None) -> None:
        self.port = cfg.web_port
        check(cfg)
        self.app = make_app(cfg, env, on_request)
        self.server = wsgi.Server((cfg.web_host, self.port), self.app, numthreads=8,
                                  server_name="dd console")
        if cfg.web_certificate is not None:
            self.server.ssl_adapter = BuiltinSSLAdapter(str(cfg.web_certificate), str(cfg.web_key))
        self.sampler = Sampler(self.app.config["DD_HISTORY"], env)
        self.url = f"{'https' if cfg.web_certificate else 'http'}://{cfg.web_host}:{self.port}/"

    def serve(self, stop: threading.Event) -> None:
        """Serve until `stop` is set."""
        try:
            self.server.prepare()
        except OSError as error:
            raise ConfigError(f"the console cannot listen on {self.url}: {error.strerror or error}",
                              fix="choose another web_port (--port)") from None
        self.sampler.start()
        log.info("console at %s", self.url)
        watcher = threading.Thread(target=lambda: (stop.wait(), self.server.stop()), daemon=True)
        watcher.start()
        try:
            self.server.serve()
        finally:
            self.sampler.stop()
            self.app.config["DD_PROVENANCE"].close()
            self.app.config["DD_HISTORY"].close()
