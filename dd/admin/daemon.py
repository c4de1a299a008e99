"""The actions of a daemon component's configuration (foreground, start, stop, restart,
status, show, declare, cleanup), and a one-shot component's run: what dd_<component>
and dd_ctl do once their command line is parsed."""
import contextlib
import datetime
import logging
import os
import signal
from collections.abc import Sequence
from typing import Optional

import humanize

from dd.admin import instances, logs, progress, runners
from dd.admin.ctl import survey
from dd.components import Component, Context
from dd.core import commands, config
from dd.core.config import Config
from dd.core.environment import Environment
from dd.core.errors import ConfigError, DDError, ExitStatus
from dd.store import metrics, pidfile
from dd.store.state import ConfigState

ACTIONS = tuple(commands.ACTIONS)
logger = logging.getLogger("dd")


def act(action: str, component: str, config_arg: str, env: Environment,
        options: Sequence[tuple[str, str]] = (), *, instance: int = 1, detached: bool = False) -> int:
    """Run one daemon action on one configuration (dd_ctl applies them to many)."""
    module = runners.module_of(component)
    cfg = config.load(component, config_arg, options, env)
    ctx = Context(cfg=cfg, env=env, credentials=cfg.credentials,
                  state=ConfigState(env.state_dir, component, cfg.name), instance=instance, detached=detached)
    return ACTION_HANDLERS[action](module, ctx, config_arg)


def run_once(module: Component, cfg: Config, env: Environment, paths: Sequence[str], *,
             deleted: bool = False, renamed_from: Optional[str] = None) -> int:
    """Run a one-shot component (dd_post) on `paths`; its exit status says what was not announced."""
    logs.setup(level=cfg.log_level, stream=env.stderr, log_format=cfg.log_format, component=module.NAME,
               configuration=cfg.name)
    with progress.shown(env.stderr) as bars:
        ctx = Context(cfg=cfg, env=env, credentials=cfg.credentials, arguments=tuple(paths), deleted=deleted,
                      renamed_from=renamed_from, progress=bars)
        the_flow = module.build(ctx)
        counters = the_flow.run()
    unconfirmed = [(i.notice.rel_path, "not confirmed by the broker") for i in the_flow.unannounced]
    failed = list(the_flow.refused) + unconfirmed
    for path, reason in failed:
        print(f"dd_{module.NAME}: not announced: {path}: {reason}", file=env.stderr)
    print(f"dd_{module.NAME}: {counters.posted} announced, {len(failed)} not announced", file=env.stderr)
    if unconfirmed:
        return ExitStatus.UNAVAILABLE
    return ExitStatus.FAILURE if failed else ExitStatus.OK


def _foreground(module, ctx, config_arg):
    cfg, env = ctx.cfg, ctx.env
    log_path = logs.log_file(env.log_dir, module.NAME, cfg.name, ctx.instance) if ctx.detached else None
    logs.setup(level=cfg.log_level, stream=env.stderr, path=log_path, days=cfg.log_days,
               log_format=cfg.log_format, component=module.NAME, configuration=cfg.name, instance=ctx.instance)
    _refuse_a_running_instance(module, ctx)
    pid_file = ctx.state.pid_file(ctx.instance)
    pidfile.write(pid_file)
    with contextlib.nullcontext() if ctx.detached else progress.shown(env.stderr) as bars:
        transfers = metrics.Transfers(display=bars)
        ctx.progress = transfers
        signal.signal(signal.SIGTERM, lambda *_: ctx.stop.set())
        signal.signal(signal.SIGINT, _Interrupts(ctx.stop, transfers))
        logger.info("%s %s instance %d starting", commands.command_of(module.NAME), cfg.name, ctx.instance)
        # Attached, it runs what `start` would run beside the instances (a pump's data
        # server), and stops what it started; instances of `start` leave that to `stop`.
        owned = [] if ctx.detached else [s for s in _services(module, ctx) if s.pid() is None]
        dead = False
        try:
            for service in list(owned):
                try:
                    service.start()
                except DDError as error:  # e.g. another configuration's server already has the port
                    logger.warning("not started: %s", error)
                    owned.remove(service)
            try:
                the_flow = module.build(ctx)
            except ConfigError as error:
                # A background instance says why in its log, and leaves its pid file so that
                # status and check report it dead (failing), not stopped.
                if ctx.detached:
                    dead = True
                    logger.error("%s %s instance %d cannot run: %s", commands.command_of(module.NAME), cfg.name,
                                 ctx.instance, error)
                raise
            with metrics.Recorder(the_flow.counters, ctx.state.metrics_file(ctx.instance), transfers=transfers):
                the_flow.run()
        finally:
            for service in owned:
                service.stop()
            if not dead:
                pidfile.remove_own(pid_file)
            logger.info("%s %s instance %d stopped", commands.command_of(module.NAME), cfg.name, ctx.instance)
    return ExitStatus.OK


class _Interrupts:
    """Ctrl-C: the first stops the flow once the notices in hand are done, and says which
    transfers it waits for; the second aborts them: their notices are not acknowledged (the
    broker delivers them again) and their temporary files are removed."""

    def __init__(self, stop, transfers):
        self.stop = stop
        self.transfers = transfers

    def __call__(self, signum, frame):
        if not self.stop.is_set():
            self.stop.set()
            flying = self.transfers.in_flight()
            if not flying:
                logger.warning("stopping")
                return
            logger.warning("stopping once the notices in hand are done; waiting for %s; press Ctrl-C again "
                           "to abort (not acknowledged, the notices come again)",
                           ", ".join(map(progress.describe, flying)))
            return
        self.transfers.abort()
        logger.warning("aborting: nothing in hand is acknowledged; it will be delivered again")
        raise KeyboardInterrupt


def _refuse_a_running_instance(module, ctx):
    """Two processes of one instance number would share its pid file and retry store: the
    second's exit would make the first look stopped, and `start` would start it again."""
    pid = instances.running(ctx.state).get(ctx.instance)
    if pid is not None and pid != os.getpid():  # `start` wrote the child's pid file for it
        name = f"{commands.command_of(module.NAME)} {ctx.cfg.name}"
        raise ConfigError(f"{name} instance {ctx.instance} already runs (pid {pid})",
                          fix=f"stop it first (dd_{module.NAME} stop {ctx.cfg.name}), or run another "
                              f"instance beside it: dd_ctl foreground {module.NAME}/{ctx.cfg.name} "
                              f"--instance {max(ctx.cfg.instances, ctx.instance) + 1}")


def _start(module, ctx, config_arg):
    if module.subscription is not None:
        module.subscription(ctx)  # choose and keep the queue name before instances race for it
    for service in _services(module, ctx):
        service.start()
    _print_services(module, ctx)
    started = instances.start(ctx, config_arg)
    print(f"{commands.command_of(module.NAME)} {ctx.cfg.name}: started {started} instance(s), "
          f"{ctx.cfg.instances} expected", file=ctx.env.stdout)
    return ExitStatus.OK


def _stop(module, ctx, config_arg):
    stopped = instances.stop(ctx.state)
    print(f"{commands.command_of(module.NAME)} {ctx.cfg.name}: stopped {stopped} instance(s)", file=ctx.env.stdout)
    for service in _services(module, ctx):
        service.stop()
    _print_services(module, ctx)
    return ExitStatus.OK


def _services(module, ctx):
    return module.services(ctx) if module.services is not None else []


def _print_services(module, ctx):
    for line in filter(None, (service.status() for service in _services(module, ctx))):
        print(f"{commands.command_of(module.NAME)} {ctx.cfg.name}: {line}", file=ctx.env.stdout)


def _restart(module, ctx, config_arg):
    _stop(module, ctx, config_arg)
    return _start(module, ctx, config_arg)


def _status(module, ctx, config_arg):
    """The state of the instances, then what they did and what waits: files and bytes (kept
    across restarts), errors of the last hour and the latest, the queue, the retries, the
    transfers in flight."""
    facts = survey.one(module.NAME, ctx.cfg, ctx.env)
    name = f"{commands.command_of(module.NAME)} {ctx.cfg.name}"
    out = ctx.env.stdout
    print(f"{name}: {facts.state} ({facts.running}/{facts.expected} instances)", file=out)
    summary = [f"{facts.files} files, {humanize.naturalsize(facts.bytes, binary=True)} delivered",
               f"{facts.errors_last_hour} errors in the last hour"]
    if facts.queue:
        waiting = "depth unknown (broker unreachable?)" if facts.queue_depth is None \
            else f"{facts.queue_depth} notices waiting"
        summary.append(f"queue {facts.queue}: {waiting}")
    if facts.retries is not None:
        summary.append(f"{facts.retries} notices waiting for a retry")
    print(f"{name}: {'; '.join(summary)}", file=out)
    if facts.last_error:
        error = facts.last_error
        when = humanize.naturaltime(datetime.timedelta(seconds=max(ctx.env.clock() - error["time"], 0)))
        print(f"{name}: last error {when}: {error['rel_path']}: {error['message']}", file=out)
    for transfer in facts.in_flight:
        print(f"{name}: in flight: {progress.describe(transfer)}", file=out)
    _print_services(module, ctx)
    return facts.status


def _show(module, ctx, config_arg):
    ctx.env.stdout.write(ctx.cfg.render())
    return ExitStatus.OK


def _declare(module, ctx, config_arg):
    if module.consumer is None:
        print(f"dd_{module.NAME} has no queue to declare; it publishes to post_exchange, declared "
              f"when first used", file=ctx.env.stdout)
        return ExitStatus.OK
    consumer = module.consumer(ctx)
    try:
        consumer.declare()
    finally:
        consumer.close()
    sub = consumer.subscription
    print(f"declared queue {sub.queue} bound to {sub.exchange} with {', '.join(sub.bindings)}",
          file=ctx.env.stdout)
    return ExitStatus.OK


def _cleanup(module, ctx, config_arg):
    if instances.running(ctx.state):
        raise ConfigError(f"{commands.command_of(module.NAME)} {ctx.cfg.name} is running", fix="stop it first")
    removed = "its state"
    if module.consumer is not None:
        consumer = module.consumer(ctx)
        try:
            consumer.delete()
        finally:
            consumer.close()
        removed = f"queue {consumer.subscription.queue} and its state"
    ctx.state.forget()
    print(f"removed {removed}", file=ctx.env.stdout)
    return ExitStatus.OK


ACTION_HANDLERS = {"foreground": _foreground, "start": _start, "stop": _stop, "restart": _restart,
                   "status": _status, "show": _show, "declare": _declare, "cleanup": _cleanup}


