"""The world a command runs in: streams, directories, clock and variables.

Commands receive an Environment instead of reaching for sys.stdout, os.environ
or platformdirs themselves, so tests can run the real CLI in-process with
their own temporary directories and capture what it prints.
"""
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, TextIO

import platformdirs

APP = "dd"


@dataclasses.dataclass
class Environment:
    stdout: TextIO
    stderr: TextIO
    config_dir: Path      # dd/<component>/<name>.conf, default.conf, credentials.conf
    state_dir: Path       # queue names, pid files, retry stores
    log_dir: Path         # one log file per component/config/instance
    environ: Mapping[str, str]
    clock: Callable[[], float] = time.time

    @classmethod
    def from_process(cls) -> "Environment":
        """The real environment: platformdirs' user directories, overridable by DD_*_DIR."""
        env = os.environ
        return cls(
            stdout=sys.stdout,
            stderr=sys.stderr,
            config_dir=Path(env.get("DD_CONFIG_DIR") or platformdirs.user_config_dir(APP)),
            state_dir=Path(env.get("DD_STATE_DIR") or platformdirs.user_state_dir(APP)),
            log_dir=Path(env.get("DD_LOG_DIR") or platformdirs.user_log_dir(APP)),
            environ=env,
        )
