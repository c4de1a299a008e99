"""The fuzz target: one message through decode → validate → path builder → a write,
in a sandbox.  Used by tests/test_fuzz.py (a fast hypothesis subset) and by
tools/fuzz.py (the long run, with atheris when it is installed)."""
import os

from dd.core import formats, paths
from dd.core.errors import DDError
from dd.core.notice import Op
from dd.delivery.receive import refuse_directory

ALLOWED_SCHEMES = {"http", "https", "sftp"}


class Escape(AssertionError):
    """Something was written outside the sandbox, or a refusal named no rule."""


def exercise(body, headers, tree):
    """What a subscriber would do with the message, up to creating the file: returns
    "accepted" or the rule that refused it.  Anything but a DDError propagates: a bug."""
    try:
        notice = formats.decode(body, headers, allowed_schemes=ALLOWED_SCHEMES)
        rel_path = paths.localize(notice.rel_path)
        if notice.op is Op.RENAME:
            paths.localize(notice.rename_from)
        if notice.op is Op.LINK:
            tree.check_link(rel_path, notice.link_target)
        with tree.parent(rel_path) as (fd, leaf):
            refuse_directory(fd, leaf, rel_path)
            # As the receiver does: a new file beside the final name, never through a link.
            out = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
            os.close(out)
            os.unlink(leaf, dir_fd=fd)
    except DDError as error:
        if not error.rule or not isinstance(error.rule, str):
            raise Escape(f"refusal without a rule: {error!r}") from None
        return error.rule
    return "accepted"


def snapshot(directory, leave_out):
    """Every path below `directory` except those below `leave_out`, with sizes."""
    seen = {}
    for top, directories, files in os.walk(directory):
        if os.path.commonpath([top, leave_out]) == str(leave_out):
            directories[:] = []
            continue
        for name in files + directories:
            path = os.path.join(top, name)
            if path != str(leave_out):  # the sandbox itself grows as it fills
                seen[path] = os.lstat(path).st_size
    return seen
