"""dd_log: read your own log messages — where the files you posted went (dd_log(7)).

A durable queue of yours, bound to the exchange the pump routes your log
messages to (xr_<you>), kept between runs so nothing routed meanwhile is
missed.  Prints what is there as a table, or one JSON object per line, and
stops once the queue is empty, or follows it until Ctrl-C.
"""
import datetime
import string
import time

import humanize

from dd import components, flow
from dd.core import commandline, config, report
from dd.core.environment import Environment
from dd.core.errors import ExitStatus, NoticeError
from dd.store.state import ConfigState

#: With nothing arriving for this long, a run without --follow is done.
IDLE = 1.0
#: Widths are minimums: nothing is cut, so no name can hide behind a cut.
COLUMNS = "{when:<19}  {outcome:<28}  {size:>9}  {time:>8}  {who:<28}  {file}"
#: What a consumer's user, host and component may show as they are: they are plain ASCII
#: words, so anything else (a look-alike letter, an invisible or spacing character, the @ and
#: / that join them in WHO) is shown escaped and cannot pass for another name.
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._-:[]")


def parser() -> commandline.Parser:
    top = commandline.Parser(prog="dd_log", usage="%(prog)s [CONFIG] [--follow] [--json] [--option value ...]",
                             **commandline.described("log"))
    top.add_argument("config", nargs="?", metavar="CONFIG",
                     help="a configuration of dd_log: a name in dd's config directory, or a path")
    top.add_argument("--follow", action="store_true", help="keep reading as log messages arrive, until Ctrl-C")
    top.add_argument("--json", action="store_true", help="one log message a line, as the pump published it")
    return top


def main(argv: list[str], env: Environment) -> int:
    args, options = commandline.parse(parser(), argv, env, "log")
    follow, as_json = args.follow, args.json
    cfg = config.load("log", args.config, options, env)
    # The queue is a consuming configuration's, kept in the state directory like any other.
    state = ConfigState(env.state_dir, "log", cfg.name or "default")
    consumer = flow.consumer(components.Context(cfg=cfg, env=env, credentials=cfg.credentials, state=state))
    try:
        consumer.start()
        if not as_json:
            print(COLUMNS.format(when="WHEN (UTC)", outcome="OUTCOME", size="BYTES", time="SECONDS",
                                 who="WHO", file="FILE"), file=env.stdout, flush=True)
        quiet_since = time.monotonic()
        while follow or time.monotonic() - quiet_since < IDLE:
            deliveries = consumer.fetch(IDLE / 2)
            for delivery in deliveries:
                _show(delivery, as_json, cfg.max_notice_size, env)
            consumer.ack(deliveries)
            if deliveries:
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    return ExitStatus.OK


def _show(delivery, as_json, max_size, env):
    try:
        if len(delivery.body) > max_size:
            raise NoticeError(f"{len(delivery.body)} bytes, over max_notice_size {max_size}")
        made = report.decode(delivery.body)
    except NoticeError as error:
        print(f"dd_log: unreadable log message on topic {delivery.topic}: {error}", file=env.stderr)
        return
    if as_json:
        # The log message as published (dd_log(7)): one JSON object a line.
        env.stdout.write(delivery.body.decode() + "\n")
    else:
        env.stdout.write(COLUMNS.format(
            when=made.pubtime.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            outcome=f"{made.code} {_text(made.message)}", size=humanize.naturalsize(made.bytes, binary=True),
            time=f"{made.duration:.3f}", who=f"{_name(made.user)}@{_name(made.host)}/{_name(made.component)}",
            file=_text(made.rel_path)) + "\n")
    env.stdout.flush()


def _name(text: str) -> str:
    return "".join(c if c in NAME_CHARACTERS else _escaped(c) for c in text)


def _text(text: str) -> str:
    """Free text with what would not show as itself (invisible, bidi, odd spaces, \\) escaped."""
    return "".join(c if c.isprintable() and c != "\\" else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
