"""Packaging: the sdist and the wheel install and run in a fresh venv; the Debian package builds
from HEAD, passes lintian and runs from a fresh Debian root; their metadata agree with setup.py."""
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

import dd
from tests.support.metadata import ROOT, console_scripts, setup_arguments

DEBIAN = ROOT / "debian"


def _minimums():
    """{python3-<distribution>: minimum version} from setup.py's install_requires."""
    requirements = setup_arguments()["install_requires"]
    pins = (re.fullmatch(r"([A-Za-z0-9_.-]+)>=([\w.]+)", r) for r in requirements)
    return {f"python3-{pin[1].lower()}": pin[2] for pin in pins if pin}


def test_every_requirement_has_a_minimum():
    assert len(_minimums()) == len(setup_arguments()["install_requires"])


def test_debian_depends_on_the_setup_py_minimums():
    control = (DEBIAN / "control").read_text(encoding="utf-8")
    depends = re.search(r"^Package: metpx-dd$.*?^Depends:(.*?)^\S", control, re.M | re.S)[1]
    pinned = dict(re.findall(r"(python3-[\w.-]+) \(>= ([\w.]+)\)", depends))
    assert pinned == _minimums()


def test_debian_version_is_the_package_version():
    first = (DEBIAN / "changelog").read_text(encoding="utf-8").splitlines()[0]
    assert re.match(r"metpx-dd \(([^)]+)\)", first)[1] == dd.__version__


def test_every_timer_is_wanted_by_a_service_of_ours():
    # debian/rules enables the timers, trusting that each runs only with its service.
    services = {unit.name for unit in (ROOT / "systemd").glob("*.service")}
    for timer in (ROOT / "systemd").glob("*.timer"):
        wanted_by = re.findall(r"^WantedBy=(.+)$", timer.read_text(encoding="utf-8"), re.M)
        assert wanted_by and set(" ".join(wanted_by).split()) <= services, timer.name


def _run(args, **kwargs):
    """The output (stdout and stderr) of a command that must succeed."""
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            check=False, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout}"
    return result.stdout


def test_sdist_and_wheel_install_and_run_in_fresh_venvs(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", dist, ROOT], timeout=600)
    sdist, = dist.glob("metpx_dd-*.tar.gz")
    wheel, = dist.glob("metpx_dd-*-py3-none-any.whl")
    _run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel], timeout=120)

    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    wanted = ["man", "config", "systemd", "tests", "README.rst", "COPYING"]
    tracked = _run(["git", "ls-files", *wanted], cwd=ROOT).split()
    assert set(tracked) <= names
    assert not any(name.startswith("debian/") for name in names)

    for artifact in (sdist, wheel):
        venv = tmp_path / artifact.name
        _run([sys.executable, "-m", "venv", venv], timeout=300)
        _run([venv / "bin" / "python", "-m", "pip", "install", "-q", artifact], timeout=600)
        for command in console_scripts():
            assert (venv / "bin" / command).is_file(), f"{artifact.name} installs no {command}"
        usage = _run([venv / "bin" / "dd_subscribe", "--help"], timeout=60, cwd=tmp_path)
        assert usage.startswith("usage: dd_subscribe")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("apt-get"),
                    reason="builds and installs Debian packages: needs root on Debian")
def test_debian_package_builds_lints_clean_and_runs_in_a_fresh_root(tmp_path):
    # tools/deb builds what is committed; CI runs it on a clean clone.
    out = _run(["bash", ROOT / "tools" / "deb", "--check", tmp_path], timeout=1200)
    assert "lintian: no errors, no warnings" in out
    assert "usage: dd_subscribe" in out
    deb, = tmp_path.glob(f"metpx-dd_{dd.__version__}_all.deb")
    contents = _run(["dpkg-deb", "--contents", deb])
    for command in console_scripts():
        assert f"./usr/bin/{command}\n" in contents
        assert re.search(rf"/usr/share/man/man[18]/{command}\.[18]\.gz\n", contents)
    for page in (ROOT / "man").glob("*.[1-8]"):
        assert f"/usr/share/man/man{page.suffix[1]}/{page.name}.gz\n" in contents
    for unit in [*(ROOT / "systemd").glob("*.service"), *(ROOT / "systemd").glob("*.timer")]:
        assert f"/lib/systemd/system/{unit.name}\n" in contents
    for conf in (ROOT / "config").rglob("*.conf"):
        assert f"/usr/share/doc/metpx-dd/examples/{conf.relative_to(ROOT / 'config')}\n" in contents
