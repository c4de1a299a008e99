"""The dd_audit command: parse, load admin.conf, reach the management API, run a verb."""
import dataclasses
import urllib.parse
from pathlib import Path

from dd.admin.audit import cleanup, declare, management, mosquitto, plan, reconcile, status
from dd.core import commandline, config
from dd.core.credentials import url_host
from dd.core.environment import Environment
from dd.core.errors import ConfigError

VERBS = {"declare": declare, "status": status, "cleanup": cleanup, "mosquitto": mosquitto}
CONFIG_FILE = "admin.conf"


@dataclasses.dataclass
class Context:
    cfg: object
    env: object
    plan: plan.Plan
    api: management.Management
    passwords: dict


def parser() -> commandline.Parser:
    top = commandline.Parser(
        prog="dd_audit", description="Set up a pump's users, permissions and exchanges on RabbitMQ "
                                     "(or Mosquitto's password and ACL files).",
        epilog=commandline.OPTIONS_EPILOG)
    top.add_argument("--config", help=f"the admin configuration (default: {CONFIG_FILE} in dd's config directory)")
    verbs = top.add_verbs()
    for module in VERBS.values():
        module.add_parser(verbs)
    return top


def main(argv: list[str], env: Environment) -> int:
    args, options = commandline.parse(parser(), argv, env, "audit")
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
