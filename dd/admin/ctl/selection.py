"""The configurations dd_ctl manages: <config dir>/<component>/<name>.conf of every daemon component."""
import dataclasses
from pathlib import Path

from dd import components
from dd.core import commands
from dd.core.errors import ConfigError


def daemon_components():
    """Names of the components that run as instances (DAEMON = True), and of dd_ctl's own
    services (the web console)."""
    return sorted([name for name in commands.COMPONENTS if components.load(name).DAEMON] + list(commands.SERVICES))


@dataclasses.dataclass(frozen=True, order=True)
class Configuration:
    component: str
    name: str
    file: Path

    def __str__(self):
        return f"{self.component}/{self.name}"


def all_configurations(env):
    found = []
    for component in daemon_components():
        directory = Path(env.config_dir) / component
        if directory.is_dir():
            found += [Configuration(component, f.name.removesuffix(".conf"), f)
                      for f in directory.glob("*.conf")]
    return sorted(found)


def select(env, selectors):
    """The configurations named by `selectors` (component/name or component), all when none."""
    every = all_configurations(env)
    if not selectors:
        return every
    known = daemon_components()
    chosen = []
    for selector in selectors:
        component, _, name = selector.removesuffix(".conf").partition("/")
        if component not in known:
            raise ConfigError(f"no daemon component {component!r} in {selector!r}",
                              fix=f"name one of {', '.join(known)}, as component/name")
        matches = [c for c in every if c.component == component and (not name or c.name == name)]
        if name and not matches:
            raise ConfigError(f"no configuration {selector}: "
                              f"{Path(env.config_dir) / component / (name + '.conf')} does not exist",
                              fix="`dd_ctl list` shows the configurations")
        chosen += [c for c in matches if c not in chosen]
    return chosen


def one(env, selector):
    """Exactly one configuration, named component/name."""
    if selector.count("/") != 1:
        raise ConfigError(f"{selector!r} does not name one configuration", fix="write component/name")
    return select(env, [selector])[0]


def add_verb(subparsers, verb, text, run, *, selectors=True):
    """The sub-parser of one verb, which runs `run(args, env)`; by default it takes selectors."""
    parser = subparsers.add_parser(verb, help=text, description=text)
    if selectors:
        parser.add_argument("configurations", nargs="*", metavar="COMPONENT[/NAME]",
                            help="configurations to act on (default: all)")
    parser.set_defaults(run=run)
    return parser
