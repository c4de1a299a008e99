"""The systemd units in systemd/: they run dd_ctl verbs that exist, and systemd accepts them."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dd.admin.ctl import main as ctl_main

UNITS = sorted((Path(__file__).resolve().parent.parent / "systemd").iterdir())
_EXEC = re.compile(r"^Exec\w+=(\S+)(.*)$", re.MULTILINE)


def test_units_found():
    assert {u.name for u in UNITS} >= {"metpx-dd.service", "metpx-dd@.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_units_run_dd_ctl_verbs_that_exist(unit):
    for program, arguments in _EXEC.findall(unit.read_text()):
        if program.endswith("/dd_ctl"):
            assert arguments.split()[0] in ctl_main.parser().verbs


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path):
    dd_ctl = tmp_path / "dd_ctl"
    dd_ctl.write_text("#!/bin/sh\n")
    dd_ctl.chmod(0o755)
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/bin/dd_ctl", str(dd_ctl)))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no",
                             *(str(tmp_path / u.name) for u in UNITS)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
