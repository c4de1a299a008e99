"""The actions of a daemon component's configuration (foreground, start, stop, restart,
status, show, declare, cleanup), and a one-shot component's run: what dd_<component>
and dd_ctl do once their command line is parsed."""
import logging
import signal
from collections.abc import Sequence
from typing import Optional

from dd import components
from dd.admin import instances, logs
from dd.components import Component, Context
from dd.core import config
from dd.core.config import Config
from dd.core.environment import Environment
from dd.core.errors import ConfigError, DDError, ExitStatus
from dd.store import metrics, pidfile
from dd.store.state import ConfigState

ACTIONS = ("foreground", "start", "stop", "restart", "status", "show", "declare", "cleanup")
logger = logging.getLogger("dd")


def act(action: str, component: str, config_arg: str, env: Environment,
        options: Sequence[tuple[str, str]] = (), *, instance: int = 1, detached: bool = False) -> int:
    """Run one daemon action on one configuration (dd_ctl applies them to many)."""
    module = components.load(component)
    cfg = config.load(component, config_arg, options, env)
    ctx = Context(cfg=cfg, env=env, credentials=cfg.credentials,
                  state=ConfigState(env.state_dir, component, cfg.name), instance=instance, detached=detached)
    return ACTION_HANDLERS[action](module, ctx, config_arg)


def run_once(module: Component, cfg: Config, env: Environment, paths: Sequence[str], *,
             deleted: bool = False, renamed_from: Optional[str] = None) -> int:
    """Run a one-shot component (dd_post) on `paths`; its exit status says what was not announced."""
    logs.setup(level=cfg.log_level, stream=env.stderr, log_format=cfg.log_format, component=module.NAME,
               configuration=cfg.name)
    ctx = Context(cfg=cfg, env=env, credentials=cfg.credentials, arguments=tuple(paths), deleted=deleted,
                  renamed_from=renamed_from)
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
    pid_file = ctx.state.pid_file(ctx.instance)
    pidfile.write(pid_file)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: ctx.stop.set())
    logger.info("dd_%s %s instance %d starting", module.NAME, cfg.name, ctx.instance)
    # Attached, it runs what `start` would run beside the instances (a pump's data
    # server), and stops what it started; instances of `start` leave that to `stop`.
    owned = [] if ctx.detached else [s for s in _services(module, ctx) if s.pid() is None]
    try:
        for service in list(owned):
            try:
                service.start()
            except DDError as error:  # e.g. another configuration's server already has the port
                logger.warning("not started: %s", error)
                owned.remove(service)
        the_flow = module.build(ctx)
        with metrics.Recorder(the_flow.counters, ctx.state.metrics_file(ctx.instance)):
            the_flow.run()
    finally:
        for service in owned:
            service.stop()
        pidfile.remove_own(pid_file)
        logger.info("dd_%s %s instance %d stopped", module.NAME, cfg.name, ctx.instance)
    return ExitStatus.OK


def _start(module, ctx, config_arg):
    if module.subscription is not None:
        module.subscription(ctx)  # choose and keep the queue name before instances race for it
    for service in _services(module, ctx):
        service.start()
    _print_services(module, ctx)
    started = instances.start(ctx, config_arg)
    print(f"dd_{module.NAME} {ctx.cfg.name}: started {started} instance(s), "
          f"{ctx.cfg.instances} expected", file=ctx.env.stdout)
    return ExitStatus.OK


def _stop(module, ctx, config_arg):
    stopped = instances.stop(ctx.state)
    print(f"dd_{module.NAME} {ctx.cfg.name}: stopped {stopped} instance(s)", file=ctx.env.stdout)
    for service in _services(module, ctx):
        service.stop()
    _print_services(module, ctx)
    return ExitStatus.OK


def _services(module, ctx):
    return module.services(ctx) if module.services is not None else []


def _print_services(module, ctx):
    for line in filter(None, (service.status() for service in _services(module, ctx))):
        print(f"dd_{module.NAME} {ctx.cfg.name}: {line}", file=ctx.env.stdout)


def _restart(module, ctx, config_arg):
    _stop(module, ctx, config_arg)
    return _start(module, ctx, config_arg)


def _status(module, ctx, config_arg):
    status, count = instances.status(ctx.state, ctx.cfg.instances)
    print(f"dd_{module.NAME} {ctx.cfg.name}: {instances.state_word(status, count)} "
          f"({count}/{ctx.cfg.instances} instances)",
          file=ctx.env.stdout)
    _print_services(module, ctx)
    return status


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
        raise ConfigError(f"dd_{module.NAME} {ctx.cfg.name} is running", fix="stop it first")
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


