"""The components: each is the common flow with a few choices.

A component module offers NAME, DAEMON (runs as ACTION CONFIG with instances)
and ``build(context) -> Flow``; daemons that consume a queue also offer
``subscription(context)`` and ``consumer(context)``, and daemons may offer
``services(context)``: helper servers (start(), stop(), status()) run beside
the instances, like a pump's data server.  Components never import each other.
"""
import dataclasses
import importlib
import threading

NAMES = ("post", "subscribe", "watch", "sara", "shovel")


def load(name):
    return importlib.import_module(f"dd.components.{name}")


@dataclasses.dataclass
class Context:
    """What a component is built from."""

    cfg: object                 # dd.core.config.Config
    env: object                 # dd.core.environment.Environment
    credentials: object         # dd.core.credentials.Credentials
    state: object = None        # dd.store.state.ConfigState (daemons)
    instance: int = 1
    detached: bool = False      # a background instance: logs to its file, not stderr
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    arguments: tuple = ()       # positional arguments (dd_post's paths)
