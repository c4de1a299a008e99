"""dd on_notice plugin: refuse files announced smaller than MIN_SIZE bytes, before any download.

    on_notice python:reject_small:check

with this file in ~/.config/dd/plugins/ (or on PYTHONPATH).  Deletes, links and renames
carry no size of their own and pass; so does a file announced in parts, judged by its
whole size.  dd_plugins(7) describes the API.
"""
import logging

from dd.core.notice import Op

#: Smaller files are refused (403 [on_notice]): empty or truncated products, in this feed.
MIN_SIZE = 64

log = logging.getLogger("dd.plugin.reject_small")


def check(notice):
    if notice.op is not Op.WRITE or notice.size is None:
        return None
    if notice.size < MIN_SIZE:
        return f"{notice.size} bytes, smaller than {MIN_SIZE}"
    log.debug("%s: %d bytes", notice.rel_path, notice.size)
    return None
