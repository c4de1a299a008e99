"""The dd_audit command: parse, load admin.conf, reach the management API, run a verb."""
import argparse
import dataclasses
import urllib.parse
from pathlib import Path

from dd.admin.audit import cleanup, declare, management, plan, reconcile, status
from dd.core import config
from dd.core.credentials import url_host
from dd.core.errors import ConfigError

VERBS = {"declare": declare, "status": status, "cleanup": cleanup}
CONFIG_FILE = "admin.conf"


@dataclasses.dataclass
class Context:
    cfg: object
    env: object
    plan: plan.Plan
    api: management.Management
    passwords: dict


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of exiting, so errors take the one exit path."""

    def error(self, message):
        raise ConfigError(message, fix="dd_audit --help")


def parser():
    top = _Parser(
        prog="dd_audit", description="Set up a pump's users, permissions and exchanges on RabbitMQ.",
        epilog="Options of the admin configuration (dd_options(5)) are also accepted as --name value.")
    top.add_argument("--config", help=f"the admin configuration (default: {CONFIG_FILE} in dd's config directory)")
    verbs = top.add_subparsers(dest="verb", metavar="VERB")
    for module in VERBS.values():
        module.add_parser(verbs)
    return top


def main(argv, env):
    top = parser()
    args, rest = top.parse_known_args(argv)
    if args.verb is None:
        raise ConfigError("no VERB given", fix=f"use one of {', '.join(VERBS)}; dd_audit --help")
    options, positionals = config.parse_args(rest, "audit")
    if positionals:
        raise ConfigError(f"unexpected argument {positionals[0]!r}", fix="dd_audit --help")
    path = Path(args.config) if args.config else Path(env.config_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"admin configuration {path} does not exist",
                          fix="create it with an admin line and declare lines: see dd_audit(8)")
    cfg = config.load("audit", str(path.resolve()), options, env)
    the_plan = plan.plan(cfg)
    admin_url = cfg.admin
    if admin_url.password is None:
        raise ConfigError(f"no password for the administrator {admin_url}",
                          fix=f"add {admin_url.scheme}://{admin_url.user or 'USER'}:PASSWORD@{admin_url.host}/ "
                              "to credentials.conf")
    api = management.Management(str(cfg.management_url) if cfg.management_url else _default_api(admin_url),
                                admin_url.user or "guest", admin_url.password)
    passwords = {u.name: reconcile.password_of(u, admin_url, cfg.credentials) for u in the_plan.users}
    return VERBS[args.verb].run(args, Context(cfg, env, the_plan, api, passwords))


def _default_api(admin_url):
    host = url_host(admin_url.host)
    scheme = "https" if admin_url.scheme == "amqps" else "http"
    return f"{scheme}://{urllib.parse.quote(host, safe='[]:')}:{management.DEFAULT_PORT}/"
