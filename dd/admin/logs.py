"""Logging: one rotated file per component/config/instance, or stderr in the foreground."""
import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


def log_file(log_dir, component, config_name, instance):
    return Path(log_dir) / f"{component}_{config_name}_{instance:02d}.log"


def setup(*, level="info", stream=None, path=None, days=7):
    """Send dd's logging to `path` (rotated daily, `days` kept) or to `stream`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.TimedRotatingFileHandler(path, when="midnight", backupCount=days,
                                                            encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter (connection setup, HTTP pools) only when debugging dd itself.
    for noisy in ("amqp", "urllib3", "paramiko"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
