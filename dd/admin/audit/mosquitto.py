"""dd_audit mosquitto: write Mosquitto's password file and ACL file from admin.conf.

On an MQTT pump the broker's ACL is the permission model: the same grants as RabbitMQ's
(dd.admin.audit.plan) with exchanges as first topic levels.  A source or subscriber
publishes under xs_<user>/ only (its notices, its log messages) and reads xpublic/, xr_<user>/
and xpriv_<user>/; the pump's own components (feeder, admin) read and write everything.
Passwords are hashed by Mosquitto's own mosquitto_passwd.  Both files are written whole
under a temporary name and renamed into place, keeping an existing file's owner and mode
(Mosquitto reads them as its own user); Mosquitto rereads them on SIGHUP.
"""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from dd.admin.audit.plan import PUBLIC_EXCHANGE, User
from dd.core.errors import ConfigError, ExitStatus
from dd.core.route import private_exchange

HELP = "write Mosquitto's password file and ACL file (an MQTT pump's users and their topics)"
MOSQUITTO_PASSWD = "mosquitto_passwd"


def add_parser(verbs):
    parser = verbs.add_parser("mosquitto", help=HELP, description=HELP)
    parser.add_argument("--password-file", required=True, help="Mosquitto's password_file to write")
    parser.add_argument("--acl-file", required=True, help="Mosquitto's acl_file to write")
    return parser


def acl(users):
    """The ACL file's text for these users (of dd.admin.audit.plan.User)."""
    lines = []
    for user in users:
        lines.append(f"user {user.name}")
        if user.role in ("admin", "feeder"):
            lines.append("topic readwrite #")
        else:
            lines.append(f"topic write xs_{user.name}/#")
            lines += [f"topic read {exchange}/#"
                      for exchange in (PUBLIC_EXCHANGE, f"xr_{user.name}", private_exchange(user.name))]
        lines.append("")
    return "\n".join(lines)


def run(args, ctx):
    passwd = shutil.which(MOSQUITTO_PASSWD)
    if passwd is None:
        raise ConfigError(f"{MOSQUITTO_PASSWD} is not installed", fix="apt-get install mosquitto")
    users = (User(ctx.plan.admin, "admin"), *ctx.plan.users)
    passwords = {**ctx.passwords, ctx.plan.admin: ctx.cfg.admin.password}

    def write_passwords(path):
        for user in users:
            # -b takes the password as an argument: visible to this machine's users while it runs,
            # as mosquitto_passwd documents; fine for the pump's administrator on the pump.
            result = subprocess.run([passwd, "-b", str(path), user.name, passwords[user.name]],
                                    check=False, capture_output=True, text=True)
            if result.returncode:
                raise ConfigError(f"{MOSQUITTO_PASSWD} refused user {user.name}: {result.stderr.strip()}")
    _replace(Path(args.password_file), write_passwords)
    _replace(Path(args.acl_file), lambda path: path.write_text(acl(users)))
    print(f"dd_audit mosquitto: {len(users)} user(s) written to {args.password_file} and {args.acl_file}; "
          "reload Mosquitto (SIGHUP) to apply", file=ctx.env.stdout)
    return ExitStatus.OK


def _replace(path, write):
    """Write `path` anew through a temporary file beside it, renamed into place."""
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    try:
        write(Path(temporary))
        if old is not None:
            os.chown(temporary, old.st_uid, old.st_gid)
            os.chmod(temporary, old.st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
