"""Logging: one rotated file per component/config/instance, or stderr in the foreground;
as text for people, or as one JSON object a line (log_format json) for log stacks."""
import datetime
import json
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Optional

FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
#: The attribute a log call sets (extra={REL_PATH: ...}) when its message is about one notice.
REL_PATH = "rel_path"


def log_file(log_dir, component, config_name, instance):
    return Path(log_dir) / f"{component}_{config_name}_{instance:02d}.log"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, component, configuration,
    instance, logger, message, and rel_path when the message is about one notice; an
    exception's traceback as `exception`.  dd_options(5) log_format names the fields."""

    def __init__(self, component: Optional[str] = None, configuration: Optional[str] = None,
                 instance: Optional[int] = None) -> None:
        super().__init__()
        self.where = {"component": component, "configuration": configuration, "instance": instance}

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                .isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), **self.where, "logger": record.name,
                "message": record.getMessage()}
        rel_path = getattr(record, REL_PATH, None)
        if rel_path is not None:
            line[REL_PATH] = rel_path
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def is_error(line: str) -> bool:
    """Whether a line of a log written here, as text or as JSON (log_format), says an error."""
    if line.startswith("{"):
        try:
            return json.loads(line).get("level") in ("error", "critical")
        except (ValueError, AttributeError):
            return False
    # FORMAT: the date, the time, then the level in brackets (a message may quote one later).
    level = line.split(" ", 3)[2:3]
    return level in (["[ERROR]"], ["[CRITICAL]"])


def setup(*, level="info", stream=None, path=None, days=7, log_format="text", component=None,
          configuration=None, instance=None):
    """Send dd's logging to `path` (rotated daily, `days` kept) or to `stream`, as text or
    as JSON lines naming `component`, `configuration` and `instance`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A file name that is not UTF-8 (its bytes as surrogates) is logged escaped, not lost
        # in a logging error.
        handler = logging.handlers.TimedRotatingFileHandler(path, when="midnight", backupCount=days,
                                                            encoding="utf-8", errors="backslashreplace")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(component, configuration, instance) if log_format == "json"
                         else logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter (connection setup, HTTP pools) only when debugging dd itself.
    for noisy in ("amqp", "urllib3", "paramiko"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
