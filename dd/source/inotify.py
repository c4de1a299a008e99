"""The kernel's inotify limits, named for people when a watched tree needs more.

Each watched directory takes one inotify watch, counted per user across all of that
user's processes, up to fs.inotify.max_user_watches (in a user namespace, also
user.max_inotify_watches).  watchdog 7 leaves out the directories it could not watch
without a word, watchdog 2 raises ENOSPC: either way the watcher asks the kernel for
one watch more once its own are in place, and says what to raise when it gets none.
"""
import ctypes
import errno
import os
from typing import Optional

#: The sysctls that bound a user's watches and instances; the lowest one readable binds.
WATCHES = ("fs.inotify.max_user_watches", "user.max_inotify_watches")
INSTANCES = ("fs.inotify.max_user_instances", "user.max_inotify_instances")
_IN_ATTRIB = 0x4


def sysctl(name: str) -> Optional[int]:
    """A sysctl's value, or None when it cannot be read."""
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def binding(names: tuple[str, ...]) -> tuple[str, Optional[int]]:
    """(name, value) of the lowest of `names`: the limit in force."""
    values = [(value, name) for name in names if (value := sysctl(name)) is not None]
    if not values:
        return names[0], None
    value, name = min(values)
    return name, value


def at_watch_limit() -> bool:
    """Whether this user can have no more inotify watches (one is asked for, and let go)."""
    from watchdog.observers import inotify_c
    fd = inotify_c.inotify_init()
    if fd < 0:
        return False    # no instance to ask with: the instance limit, which watchdog raises itself
    try:
        return inotify_c.inotify_add_watch(fd, b"/", _IN_ATTRIB) < 0 and ctypes.get_errno() == errno.ENOSPC
    finally:
        os.close(fd)


def directories_below(roots: list[str]) -> int:
    """How many directories `roots` are, with those below them (symbolic links not followed)."""
    return sum(1 + sum(len(subdirectories) for _, subdirectories, _ in os.walk(root)) for root in roots)


def shortage(roots: list[str], error: Optional[OSError] = None) -> Optional[tuple[str, str]]:
    """(message, fix) when watching `roots` failed with `error`, or succeeded only in part,
    for lack of inotify watches or instances; None when the limits are not the cause."""
    watched = ", ".join(roots)
    if error is not None and error.errno == errno.EMFILE:
        name, value = binding(INSTANCES)
        return (f"cannot watch {watched}: this user has all the inotify instances {name} allows ({value})",
                f"raise it: sysctl -w {name}={max(2 * (value or 64), 256)}, and keep it in /etc/sysctl.d/")
    if (error is None or error.errno != errno.ENOSPC) and not at_watch_limit():
        return None
    needed = directories_below(roots)
    name, value = binding(WATCHES)
    return (f"cannot watch all of {watched}: its {needed:,} directories need as many inotify watches, "
            f"and {name} is {value if value is None else f'{value:,}'} for all of this user's processes",
            f"raise it: sysctl -w {name}={max(2 * needed, 2 * (value or 0), 65536)}, "
            f"and keep it in /etc/sysctl.d/")
