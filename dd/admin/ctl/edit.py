"""dd_ctl edit: open a configuration in $VISUAL or $EDITOR, then check that it still loads."""
import shlex
import subprocess
from pathlib import Path

from dd.core import config
from dd.admin.ctl import selection
from dd.core.errors import ConfigError, ExitStatus

HELP = "edit a configuration (a new one is created) with $VISUAL or $EDITOR, then check it"


def add_parser(subparsers):
    parser = selection.add_verb(subparsers, "edit", HELP, run, selectors=False)
    parser.add_argument("configuration", metavar="COMPONENT/NAME")


def run(args, env):
    component, _, name = args.configuration.removesuffix(".conf").partition("/")
    if component not in selection.daemon_components() or not name or "/" in name:
        raise ConfigError(f"{args.configuration!r} does not name a configuration",
                          fix="write component/name; `dd_ctl list` shows the configurations")
    path = Path(env.config_dir) / component / f"{name}.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    editor = env.environ.get("VISUAL") or env.environ.get("EDITOR") or "vi"
    try:
        result = subprocess.run(shlex.split(editor) + [str(path)], env=dict(env.environ),
                                check=False)
    except OSError as error:
        raise ConfigError(f"cannot run editor {editor!r}: {error.strerror}",
                          fix="set VISUAL or EDITOR") from None
    if result.returncode:
        print(f"dd_ctl: editor {editor!r} exited {result.returncode}", file=env.stderr)
        return ExitStatus.FAILURE
    if path.is_file():
        config.load(component, name, [], env)  # a ConfigError names the bad line
    return ExitStatus.OK
