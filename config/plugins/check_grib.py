r"""dd on_file plugin: refuse a delivered file that is not GRIB, so it never reaches the
programs that read the directory.

    accept .*\.grib2?
    on_file python:check_grib:check

with this file in ~/.config/dd/plugins/ (or on PYTHONPATH).  A GRIB file (editions 1 and 2)
is a sequence of messages, each starting with GRIB and ending with 7777; this checks the
file's first and last four bytes, cheap enough for every file.  A refused file is removed
and logged (403 [on_file]).  dd_plugins(7) describes the API.
"""
import logging
import os

from dd.delivery.plugins import Reject

log = logging.getLogger("dd.plugin.check_grib")


def check(local_path, notice):
    with open(local_path, "rb") as data:
        head = data.read(4)
        if head != b"GRIB":
            return Reject(f"does not start with GRIB but {head!r}")
        data.seek(-4, os.SEEK_END)
        if data.read(4) != b"7777":
            return Reject("does not end with 7777: truncated?")
    log.debug("%s: GRIB", local_path)
    return None
