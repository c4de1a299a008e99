"""Entry points of the dd_* commands, and the one place errors become exit statuses.

Every command takes an Environment (streams, directories, variables) so tests
can run the real CLI in-process.
"""
import contextlib
import importlib
import logging
import os
import signal
import sys

from dd import components, config, logs, metrics, pidfile
from dd.cli import instances
from dd.errors import ConfigError, DDError, ExitStatus, exit_status
from dd.environment import Environment
from dd.state import ConfigState

ACTIONS = ("foreground", "start", "stop", "restart", "status", "show", "declare", "cleanup")
USAGE = {
    "post": "usage: dd_post [--config CONFIG] [--option value ...] [--delete] PATH...",
    **{name: f"usage: dd_{name} ACTION CONFIG [--option value ...]\n  ACTION: {', '.join(ACTIONS)}"
       for name in ("subscribe", "watch", "sara", "shovel")},
}
#: Commands that are not flow components: their own main(argv, env), imported when run.
COMMAND_MAINS = {"audit": "dd.audit.main:main", "ctl": "dd.ctl.main:dispatch", "log": "dd.cli.log:main"}
logger = logging.getLogger("dd")


def run(component, argv, env=None):
    """Run dd_<component> with `argv`; return its exit status."""
    env = env or Environment.from_process()
    try:
        if component in COMMAND_MAINS:
            module, _, function = COMMAND_MAINS[component].partition(":")
            return getattr(importlib.import_module(module), function)(list(argv), env)
        return _dispatch(component, list(argv), env)
    except DDError as error:
        print(f"dd_{component}: {error}", file=env.stderr)
        return exit_status(error)
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`dd_log | head`): nothing more to say, and nothing wrong.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.OK
    except Exception as error:  # noqa: BLE001 - a bug: one line for the user, details in the log
        logger.debug("internal error", exc_info=True)
        print(f"dd_{component}: internal error: {error!r} (please report it; run with "
              f"--log_level debug for details)", file=env.stderr)
        return ExitStatus.FAILURE


def _dispatch(component, argv, env):
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE[component], file=env.stdout)
        print("options: see dd_options(5), or `show` for a configuration's effective values",
              file=env.stdout)
        return ExitStatus.OK if argv else ExitStatus.USAGE
    module = components.load(component)
    if not module.DAEMON:
        return _one_shot(module, argv, env)
    instance, detached = _pop_instance(argv)
    options, positionals = config.parse_args(argv, component)
    if len(positionals) != 2 or positionals[0] not in ACTIONS:
        raise ConfigError(f"expected ACTION CONFIG, got {' '.join(positionals) or 'nothing'}",
                          fix=USAGE[component].replace("\n", ";"))
    action, config_arg = positionals
    return act(action, component, config_arg, env, options, instance=instance, detached=detached)


def act(action, component, config_arg, env, options=(), *, instance=1, detached=False):
    """Run one daemon action on one configuration (dd_ctl applies them to many)."""
    module = components.load(component)
    cfg = config.load(component, config_arg, options, env)
    ctx = components.Context(cfg=cfg, env=env, credentials=cfg.credentials,
                             state=ConfigState(env.state_dir, component, cfg.name), instance=instance,
                             detached=detached)
    return ACTION_HANDLERS[action](module, ctx, config_arg)


def _pop_value(argv, flag):
    """Remove `flag VALUE` from argv and return VALUE (None when absent)."""
    if flag not in argv:
        return None
    at = argv.index(flag)
    if at + 1 >= len(argv):
        raise ConfigError(f"{flag} needs a value")
    value = argv[at + 1]
    del argv[at:at + 2]
    return value


def _pop_instance(argv):
    value = _pop_value(argv, "--instance")
    if value is None:
        return 1, False
    if not value.isdigit():
        raise ConfigError("--instance needs a number")
    return int(value), True


def _one_shot(module, argv, env):
    deleted = "--delete" in argv
    argv = [a for a in argv if a != "--delete"]
    config_arg = _pop_value(argv, "--config")
    options, paths = config.parse_args(argv, module.NAME)
    if not paths:
        raise ConfigError("no PATH to announce", fix=USAGE[module.NAME])
    cfg = config.load(module.NAME, config_arg, options, env)
    logs.setup(level=cfg.log_level, stream=env.stderr)
    ctx = components.Context(cfg=cfg, env=env, credentials=cfg.credentials, arguments=tuple(paths))
    the_flow = module.build(ctx, deleted=deleted)
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
    logs.setup(level=cfg.log_level, stream=env.stderr, path=log_path, days=cfg.log_days)
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
    if hasattr(module, "subscription"):
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
    return module.services(ctx) if hasattr(module, "services") else []


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
    if not hasattr(module, "consumer"):
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
    if hasattr(module, "consumer"):
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


def _entry_point(command):
    def main():
        return run(command, sys.argv[1:])
    main.__name__ = command
    return main


# The console scripts dd_<command> (setup.py names them).
post, subscribe, watch, sara, shovel, audit, ctl, log = map(
    _entry_point, ("post", "subscribe", "watch", "sara", "shovel", "audit", "ctl", "log"))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
