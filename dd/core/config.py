"""The config language, driven by the table in dd.core.options

Rules (dd_options(5) tells users the same):
- `option value`, one a line; blank lines and lines whose first non-blank
  character is '#' are ignored.  A trailing comment starts at a '#' with
  whitespace on both sides, after the value's first word, so values keep
  their own '#': `subtopic #`, `accept .*#.*`, `subtopic a.#  # all of a`.
- A bool option alone on a line (or alone on the command line) means on.
- `include FILE` reads FILE, relative to the including file's directory;
  `include https://...` a remote snippet (dd.core.remote_include), which may set
  only the options of include_allow, sees no environment variable and
  includes nothing.
- ${VAR} is expanded in values from the environment and the built-ins
  CONFIG, COMPONENT, HOSTNAME, USER, BROKER_USER and POST_BROKER_USER (the
  user of the broker set above the line); an unknown VAR is an error.
- <config_dir>/default.conf is read first, then the configuration file, then
  command-line options.  Later values replace earlier ones, except for
  options that repeat (subtopic, path, accept, reject), which accumulate.
- directory, mirror, strip and flatten apply to the accept lines below them;
  accept/reject patterns are tried in order against the notice's relative
  path (without a leading '/') with re.fullmatch, and the first match wins.
- Options a component does not use are accepted in files, since default.conf
  and includes are shared, but refused on its command line.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import pwd
import re
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, cast

from dd.core import commands, remote_include
from dd.core.credentials import Credentials, Url
from dd.core.errors import ConfigError
from dd.core.options import BOOL, BOOL_WORDS, BROKER, BY_NAME, COMPONENTS, NEVER_REMOTE, OPTIONS, Option

if TYPE_CHECKING:
    from _typeshed import StrPath

    from dd.core.environment import Environment

DEFAULT_FILE = "default.conf"
COMMAND_LINE = "command line"
DEFAULT = "default"
DELIVERY = ("directory", "mirror", "strip", "flatten")
BUILT_INS = ("CONFIG", "COMPONENT", "HOSTNAME", "USER", "BROKER_USER", "POST_BROKER_USER")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_COMMENT = re.compile(r"\s#(\s|$)")
_ANY_PATH = re.compile(".*", re.DOTALL)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: Where a value came from: 'default', 'file:line' or 'command line'; one each for repeating options.
Origin = Union[str, tuple[str, ...]]
_UNSET_FIX = {
    "CONFIG": "it is only set when a configuration is named",
    "BROKER_USER": "put a broker line with a user above this line",
    "POST_BROKER_USER": "put a post_broker line with a user above this line",
}


@dataclasses.dataclass(frozen=True)
class Mask:
    """An accept or reject line, with the delivery settings in force where it stands."""

    pattern: re.Pattern[str]
    accept: bool
    directory: Path
    mirror: bool
    strip: int
    flatten: str
    origin: str                 # file:line, or where accept_unmatched was set


class Config:
    """The effective configuration of one component: `cfg.<option>` for every option."""

    def __init__(self, component: str, name: str | None, file: Path | None, values: dict[str, Any],
                 origins: dict[str, Origin], masks: Iterable[Mask], ordered: Iterable[tuple[str, Any, str]],
                 credentials: Credentials) -> None:
        self.component = component
        self.name = name                # None when no configuration file was named
        self.file = file
        self.masks = tuple(masks)
        self.credentials = credentials
        self._values = values
        self._origins = origins         # a tuple, one per value, for repeating options
        self._ordered = tuple(ordered)  # (option, value, origin) as read, for render
        self._unmatched = Mask(_ANY_PATH, True, **{n: values[n] for n in DELIVERY},
                               origin=self.origin("accept_unmatched"))

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"no option {name!r}")

    def origin(self, name: str) -> str:
        """Where the value came from: 'default', 'file:line' or 'command line'."""
        origin = self._origins[name]
        return ", ".join(origin) if isinstance(origin, tuple) else origin

    def decide(self, rel_path: str) -> Mask | None:
        """The mask deciding `rel_path`: the first accept or reject line matching it;
        for unmatched paths, one that accepts with the last delivery settings when
        accept_unmatched is on, else None."""
        path = rel_path.lstrip("/")
        for mask in self.masks:
            if mask.pattern.fullmatch(path):
                return mask
        return self._unmatched if self.accept_unmatched else None

    def match(self, rel_path: str) -> Mask | None:
        """The accepting mask for `rel_path`, or None when it is rejected."""
        mask = self.decide(rel_path)
        return mask if mask and mask.accept else None

    def accepting(self) -> list[Mask]:
        """The masks that take notices: accept lines, and accept_unmatched's when it is on."""
        return [m for m in self.masks if m.accept] + ([self._unmatched] if self.accept_unmatched else [])

    def refusal(self, rel_path: str) -> str:
        """The rule that refuses `rel_path`, for a log line: its reject line, or no accept line."""
        mask = self.decide(rel_path)
        if mask is None:
            return "no accept line matches it and accept_unmatched is off"
        return f"reject {mask.pattern.pattern} ({mask.origin})"

    def require(self, *names: str) -> None:
        """ConfigError naming the first of `names` that is unset."""
        for name in names:
            if self._values[name] in (None, ()):
                raise ConfigError(f"dd_{self.component} needs {name}",
                                  fix=f"set it in the configuration or with --{name}: "
                                      f"{BY_NAME[name].kind.expected}")

    def render(self) -> str:
        """Every effective option for this component with its origin, for `show`.

        The text is in the config language itself; sensitive values and URL
        passwords never appear in it."""
        lines = [f"# dd_{self.component} {self.name or '(no configuration file)'}"
                 + (f": {self.file}" if self.file else "")]
        for option in (o for o in OPTIONS if self.component in o.components and not o.ordered):
            value, origin = self._values[option.name], self._origins[option.name]
            pairs = zip(value, origin) if option.repeat else [(value, cast(str, origin))]
            lines += [_show_line(option, v, o) for v, o in pairs] or [_show_line(option, None, "")]
        lines.append("# accept and reject lines are tried in order, the first match wins; "
                     "settings apply to the lines below them")
        lines += (_show_line(BY_NAME[name], value, origin) for name, value, origin in self._ordered
                  if self.component in BY_NAME[name].components)
        return "\n".join(lines) + "\n"


def _show_line(option: Option, value: Any, origin: str) -> str:
    if value is None:
        return f"# {option.name} is unset"
    text = "(redacted)" if option.sensitive else option.kind.format(value)
    if isinstance(value, Url) and value.password is not None:
        origin += ", with a password"
    return f"{f'{option.name} {text}':<48} # {origin}"


def load(component: str, config: StrPath | None, cli_options: Iterable[tuple[str, str]],
         env: Environment) -> Config:
    """The Config for `component` (e.g. "subscribe") from default.conf, then the
    configuration `config` (a name, a path, or None), then `cli_options`: the
    (name, value) pairs take_options returns."""
    if component not in COMPONENTS:
        raise ConfigError(f"unknown component {component!r}", fix=f"use one of {COMPONENTS}")
    file = None if config is None else config_file(component, config, env)
    credentials = Credentials.load(env.config_dir)
    reader = _Reader(component, None if file is None else file.name.removesuffix(".conf"), env, credentials)
    default = Path(env.config_dir) / DEFAULT_FILE
    if default.is_file():
        reader.read(default)
    if file is not None:
        reader.read(file)
    for name, text in cli_options:
        reader.apply(name, text, COMMAND_LINE)
    return reader.config(file)


def config_file(component: str, config: StrPath, env: Environment) -> Path:
    """The file a configuration argument names: a path when it has a '/', else
    <config_dir>/<component>/<name>.conf ('.conf' optional)."""
    config = str(config)
    if "/" in config:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        return path
    name = config.removesuffix(".conf")
    path = Path(env.config_dir) / component / f"{name}.conf"
    if not path.is_file():
        raise ConfigError(f"no configuration '{name}' for {commands.command_of(component)}: {path} does not exist",
                          fix=f"create it, or give a path like ./{name}.conf")
    return path


def take_options(argv: Sequence[str], component: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Take the options of the table out of a command line: ([(option, value text)...],
    [the rest, in order]); the command's own flags and arguments are the rest.

    `--name value` or `--name=value`; a bool option takes the next argument only if
    it is a bool word (on, off, yes, ...), else it means on.  `--` ends the options:
    it stays in the rest, and so does all that follows it.  Values are checked by load().
    """
    options: list[tuple[str, str]] = []
    rest: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            rest += [arg, *args]
            break
        name, has_value, value = arg[2:].partition("=")
        option = BY_NAME.get(name) if arg.startswith("--") else None
        if option is None:
            rest.append(arg)
            continue
        if component not in option.components:
            users = ", ".join(commands.command_of(c) for c in COMPONENTS if c in option.components)
            raise ConfigError(f"option --{name} is not used by {commands.command_of(component)}",
                              fix=f"only {users} use it")
        if not has_value:
            if option.kind is BOOL:
                value = args.pop(0) if args and args[0].lower() in BOOL_WORDS else "on"
            elif not args or args[0].startswith("--"):
                raise ConfigError(f"option --{name} needs a value",
                                  fix=f"expected {option.kind.expected}")
            else:
                value = args.pop(0)
        options.append((name, value))
    return options, rest


def unknown_option(name: str, where: str, *, candidates: Iterable[str] = BY_NAME, prefix: str = "",
                   otherwise: str = "dd_options(5) lists the options") -> ConfigError:
    """The error for an option nobody knows, with the closest of `candidates` as its fix."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return ConfigError(f"{where}: unknown option '{prefix}{name}'",
                       fix=f"did you mean '{prefix}{close[0]}'?" if close else otherwise)


def _lookup(name: str, where: str, extra: Iterable[str] = ()) -> Option:
    option = BY_NAME.get(name)
    if option is None:
        raise unknown_option(name, where, candidates=[*BY_NAME, *extra])
    return option


def _strip_comment(value: str) -> str:
    # The value's first word is never a comment, so `subtopic #` keeps its wildcard.
    first = value.split(None, 1)[0] if value else ""
    comment = _COMMENT.search(value, len(first))
    return (value[:comment.start()] if comment else value).strip()


def _parse(option: Option, text: str, where: str) -> Any:
    if not text and option.kind is BOOL:
        return True
    if not text:
        raise ConfigError(f"{where}: {option.name} needs a value",
                          fix=f"expected {option.kind.expected}")
    try:
        return option.kind.parse(text)
    except ValueError as error:
        # A URL may carry a password: describe it, never quote it.
        shown = "" if option.sensitive or option.kind.name == "url" else f" '{text}'"
        detail = f": {error}" if str(error) else ""
        raise ConfigError(f"{where}: bad {option.name} value{shown}{detail}",
                          fix=f"expected {option.kind.expected}") from None


class _Reader:
    """Reads lines in order, keeping the state the order-sensitive options need."""

    def __init__(self, component: str, name: str | None, env: Environment, credentials: Credentials) -> None:
        self.component = component
        self.name = name
        self.env = env
        self.environ = env.environ
        self.credentials = credentials
        self.values: dict[str, Any] = {}        # only what was set, in reading order
        self.origins: dict[str, Any] = {}
        self.masks: list[Mask] = []
        self.including: list[Path] = []         # files being read, to catch include loops
        self.remote: str | None = None          # the remote include being read
        self.remote_lines: list[tuple[str, str]] = []   # (option, where) a remote include set
        self.ordered = [(n, self._default(BY_NAME[n]), DEFAULT) for n in DELIVERY]

    def read(self, path: StrPath, where: str | None = None) -> None:
        path = Path(path)
        key = path.resolve()
        prefix = f"{where}: " if where else ""
        if key in self.including:
            chain = " -> ".join(map(str, [*self.including, key]))
            raise ConfigError(f"{prefix}include loop: {chain}", fix="remove one of the includes")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or error
            raise ConfigError(f"{prefix}cannot read {path}: {reason}") from None
        self.including.append(key)
        for number, line in enumerate(text.splitlines(), 1):
            self._line(line.strip(), f"{path}:{number}", path.parent)
        self.including.pop()

    def _line(self, line: str, where: str, directory: Path) -> None:
        if not line or line.startswith("#"):
            return
        name, _, value = line.replace("\t", " ").partition(" ")
        value = _strip_comment(value.strip())
        if name != "include":
            self.apply(name, value, where)
        elif self.remote is not None:
            raise ConfigError(f"{where}: a remote include may not include anything",
                              fix=f"ask the publisher of {self.remote} to put it in the snippet itself")
        elif not value:
            raise ConfigError(f"{where}: include needs a file name")
        elif _URL.match(value):
            self._read_remote(self._expand(value, where), where)
        else:
            self.read(directory / self._expand(value, where), where)

    def _read_remote(self, text: str, where: str) -> None:
        url = remote_include.parse(text, where)
        setting = {n: self.values.get(n, self._default(BY_NAME[n])) for n in ("include_refresh", "https_ca_file")}
        snippet = remote_include.text(self.credentials.complete(url), state_dir=self.env.state_dir,
                                      refresh=setting["include_refresh"], ca_file=setting["https_ca_file"],
                                      where=where, clock=self.env.clock)
        self.remote = str(url)
        try:
            for number, line in enumerate(snippet.splitlines(), 1):
                self._line(line.strip(), f"{url}:{number}", Path())
        finally:
            self.remote = None

    def apply(self, name: str, text: str, where: str) -> None:
        option = _lookup(name, where, extra=["include"] if where != COMMAND_LINE else ())
        if self.remote is not None:
            if name in NEVER_REMOTE:
                raise ConfigError(f"{where}: a remote include may not set {name}",
                                  fix="set it in your own configuration")
            self.remote_lines.append((name, where))   # judged against the final include_allow
        value = _parse(option, self._expand(text, where), where)
        if isinstance(value, Url) and option.kind is BROKER:
            # Now, so that ${BROKER_USER} sees a user credentials.conf supplies.  Only brokers:
            # a data server's URL is announced as written, never with a user of credentials.conf.
            value = self.credentials.complete(value)
        if name in ("accept", "reject"):
            settings = {n: self.values.get(n, self._default(BY_NAME[n])) for n in DELIVERY}
            self.masks.append(Mask(value, name == "accept", **settings, origin=where))
        if option.ordered:
            self.ordered.append((name, value, where))
        if option.repeat:
            self.values.setdefault(name, []).append(value)
            self.origins.setdefault(name, []).append(where)
        else:
            self.values[name] = value
            self.origins[name] = where

    def _expand(self, text: str, where: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            value = self._variable(name)
            if value is not None:
                return value
            if name in BUILT_INS:
                raise ConfigError(f"{where}: ${{{name}}} has no value here", fix=_UNSET_FIX[name])
            if self.remote is not None:
                raise ConfigError(f"{where}: a remote include sees no environment variable: ${{{name}}}",
                                  fix=f"it may use {', '.join(BUILT_INS)}")
            raise ConfigError(f"{where}: unknown variable ${{{name}}}",
                              fix=f"set it in the environment, or use one of {', '.join(BUILT_INS)}")
        return _VARIABLE.sub(substitute, text)

    def _variable(self, name: str) -> str | None:
        broker = {"BROKER_USER": "broker", "POST_BROKER_USER": "post_broker"}.get(name)
        if broker:
            return getattr(self.values.get(broker), "user", None)
        if name == "CONFIG":
            return self.name
        if name == "COMPONENT":
            return self.component
        if name in self.environ and self.remote is None:
            return self.environ[name]
        if name == "HOSTNAME":
            return socket.gethostname()
        if name == "USER":
            return pwd.getpwuid(os.getuid()).pw_name
        return None

    def _default(self, option: Option) -> Any:
        text = option.default_for(self.component)
        try:
            value = None if text is None else option.kind.parse(self._expand(text, DEFAULT))
        except ConfigError:     # it names a broker user, and that broker is unset
            value = None
        if option.repeat:
            return () if value is None else (value,)
        return value

    def config(self, file: Path | None) -> Config:
        values: dict[str, Any] = {}
        origins: dict[str, Origin] = {}
        for option in OPTIONS:
            name = option.name
            if name in self.values:
                value, origin = self.values[name], self.origins[name]
            else:
                value = self._default(option)
                origin = (DEFAULT,) * len(value) if option.repeat else DEFAULT
            values[name] = tuple(value) if option.repeat else value
            origins[name] = tuple(origin) if option.repeat else origin
        for name, where in self.remote_lines:
            if name not in values["include_allow"]:
                raise ConfigError(f"{where}: a remote include may not set {name} (include_allow: "
                                  f"{' '.join(values['include_allow'])})",
                                  fix=f"add {name} to include_allow only if you trust its publisher with it")
        if values["accept_unmatched"] is None:
            accepts = any(mask.accept for mask in self.masks)
            values["accept_unmatched"] = not accepts
            origins["accept_unmatched"] = f"{DEFAULT}: {'an' if accepts else 'no'} accept line"
        return Config(self.component, self.name, file, values, origins, self.masks,
                      self.ordered, self.credentials)
