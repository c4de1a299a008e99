"""Per-configuration state on disk: queue name, pid files, instance metrics, what dd_watch
announced, the on_file commands due (under Environment.state_dir); and which processes run."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import StrPath


class ConfigState:
    """The state directory of one component/config pair, shared by its instances."""

    def __init__(self, state_dir: StrPath, component: str, config_name: str) -> None:
        self.component = component
        self.config_name = config_name
        self.dir = Path(state_dir) / component / config_name

    def shared_file(self, name: str) -> Path:
        """A file shared by every configuration of the component (e.g. the nodupe store)."""
        return self.dir.parent / name

    def pid_file(self, instance: int) -> Path:
        return self.dir / f"i{instance:03d}.pid"

    def pid_files(self) -> list[Path]:
        return sorted(self.dir.glob("i*.pid")) if self.dir.is_dir() else []

    def retry_file(self, instance: int) -> Path:
        """The retry store of one instance (dd.store.retry)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / f"retry.i{instance:03d}.db"

    def retry_files(self) -> list[Path]:
        """The retry stores of every instance that ever ran, without creating the directory."""
        return sorted(self.dir.glob("retry.i*.db")) if self.dir.is_dir() else []

    def hooks_file(self) -> Path:
        """The on_file commands due, shared by the instances (dd.delivery.hooks)."""
        return self.dir / "on_file.db"

    def check_file(self) -> Path:
        """What the previous `dd_ctl check` saw, to tell whether the retries grow."""
        return self.dir / "check.json"

    def metrics_file(self, instance: int) -> Path:
        """What the instance did (dd.store.metrics), kept after it stops."""
        return self.dir / f"i{instance:03d}.json"

    def known_queue(self) -> str | None:
        """The queue name chosen earlier, or None: looking must not choose one."""
        try:
            return (self.dir / "queue").read_text().strip() or None
        except FileNotFoundError:
            return None

    def queue_name(self, user: str) -> str:
        """q_<user>.<component>.<config>.<random>, chosen once and kept so restarts reuse it;
        chosen anew when the configuration's broker user changed (the broker would refuse
        the old name to the new user)."""
        path = self.dir / "queue"
        try:
            kept = path.read_text().strip()
            if kept.startswith(f"q_{user}."):
                return kept
            path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"q_{user}.{self.component}.{self.config_name}.{secrets.token_hex(4)}"
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(name + "\n")
        try:
            os.link(tmp, path)  # first writer wins when instances start together
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text().strip()

    def announced_file(self) -> Path:
        """What dd_watch announced: relative path -> [size, mtime_ns] (dd.components.watch)."""
        return self.dir / "announced.json"

    def forget(self) -> None:
        """Remove the queue name and dd_watch's record: `cleanup` leaves a fresh start."""
        (self.dir / "queue").unlink(missing_ok=True)
        self.announced_file().unlink(missing_ok=True)

