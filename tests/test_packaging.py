"""Packaging: the sdist and the wheel install and run in a fresh venv; the Debian package builds
from HEAD, passes lintian and runs from a fresh Debian root; the RPM builds from HEAD with
rpmbuild, passes rpmlint and holds every command, page, unit and example; their metadata agree
with setup.py."""
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
from packaging.version import Version

import dd
from tests.support.metadata import ROOT, console_scripts, setup_arguments

DEBIAN = ROOT / "debian"
SPEC = ROOT / "rpm" / "metpx-dd.spec"


def _minimums(debian=False):
    """{python3-<distribution>: minimum version} from setup.py's install_requires; Debian
    names python3-prometheus-client what Fedora names python3-prometheus_client."""
    requirements = setup_arguments()["install_requires"]
    pins = (re.fullmatch(r"([A-Za-z0-9_.-]+)>=([\w.]+)", r) for r in requirements)
    names = {f"python3-{pin[1].lower()}": pin[2] for pin in pins if pin}
    return {name.replace("_", "-"): version for name, version in names.items()} if debian else names


def test_every_requirement_has_a_minimum():
    assert len(_minimums()) == len(setup_arguments()["install_requires"])


def test_debian_depends_on_the_setup_py_minimums():
    control = (DEBIAN / "control").read_text(encoding="utf-8")
    depends = re.search(r"^Package: metpx-dd$.*?^Depends:(.*?)^\S", control, re.M | re.S)[1]
    pinned = dict(re.findall(r"(python3-[\w.-]+) \(>= ([\w.]+)\)", depends))
    assert pinned == _minimums(debian=True)


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
    assert not any(name.startswith(("debian/", "rpm/")) for name in names)

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


def test_rpm_requires_the_setup_py_minimums():
    spec = SPEC.read_text(encoding="utf-8")
    pinned = dict(re.findall(r"^Requires:\s+(python3-[\w.-]+) >= ([\w.]+)$", spec, re.M))
    assert pinned == _minimums()


NEEDS_RPMSPEC = pytest.mark.skipif(not shutil.which("rpmspec"),
                                   reason="needs rpmspec: Debian's package rpm (tools/install --test installs it)")


def _rpm_version(pep440):
    """The RPM Version that rpm itself reads from the spec for a dd version, or rpm's error."""
    result = subprocess.run(["rpmspec", "-q", "--srpm", "--qf", "%{VERSION}", "--define", f"dd_version {pep440}",
                             "--define", "python3_sitelib /usr/lib/python3.9/site-packages", SPEC],
                            capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else result.stderr


@NEEDS_RPMSPEC
def test_rpm_version_of_a_snapshot_sorts_as_its_pep_440_version():
    # In PEP 440 order; tools/snapshot builds with a .devN+gHASH version.
    versions = ["0.1.0", "0.1.1.dev20261203051500+g1a2b3c4", "0.1.1", "0.2.0.dev20261203051500",
                "0.2.0.dev20261203051500+g1a2b3c4", "0.2.0.dev20261204000000+g0a0b0c0", "0.2.0", "0.2.0+g1",
                "0.2.1", "0.10.0.dev1", "0.10.0"]
    assert sorted(versions, key=Version) == versions
    rpm_versions = [_rpm_version(v) for v in versions]
    assert rpm_versions[0] == "0.1.0"
    assert rpm_versions[4] == "0.2.0~dev20261203051500+g1a2b3c4"
    # rpm's own comparison, every pair: -1, 0 or 1 as PEP 440 orders them.
    pairs = [(a, b) for a in rpm_versions for b in rpm_versions]
    lua = "".join(f'print(rpm.vercmp("{a}", "{b}") .. " ") ' for a, b in pairs)
    signs = _run(["rpm", "--eval", f"%{{lua: {lua}}}"]).split()
    expected = [str((i > j) - (i < j)) for i in range(len(versions)) for j in range(len(versions))]
    assert signs == expected


@NEEDS_RPMSPEC
@pytest.mark.parametrize("version", ["0.2.0rc1", "0.2.0a1", "0.2.0.post1", "0.2.0.dev", "1..2", "0.2.0+"])
def test_rpm_version_refuses_what_it_cannot_order(version):
    # "~a1" would sort before "~dev1", where PEP 440 puts the .dev release first.
    assert f"no RPM version for PEP 440 version {version}:" in _rpm_version(version)


@pytest.mark.skipif(not (shutil.which("rpmbuild") and shutil.which("rpmlint")),
                    reason="needs rpmbuild and rpmlint: Debian's packages rpm and rpmlint "
                           "(tools/install --test installs them)")
def test_rpm_builds_lints_clean_and_holds_every_command_page_unit_and_example(tmp_path):
    # tools/rpm builds what is committed; CI runs it on a clean clone.
    out = _run(["bash", ROOT / "tools" / "rpm", tmp_path], timeout=1200)
    assert out.rstrip().endswith("rpmlint: no errors, no unexplained warnings")
    version = _rpm_version(dd.__version__)
    rpm, = tmp_path.glob(f"metpx-dd-{version}-1.noarch.rpm")
    assert f"built {rpm}\n" in out
    assert (tmp_path / f"metpx-dd-{version}-1.src.rpm").is_file()

    files = set(_run(["rpm", "-qpl", rpm]).splitlines())
    for command in console_scripts():
        assert f"/usr/bin/{command}" in files
        assert any(re.fullmatch(rf"/usr/share/man/man[18]/{command}\.[18]\.gz", f) for f in files), command
    for page in (ROOT / "man").glob("*.[1-8]"):
        assert f"/usr/share/man/man{page.suffix[1]}/{page.name}.gz" in files
    for unit in [*(ROOT / "systemd").glob("*.service"), *(ROOT / "systemd").glob("*.timer")]:
        assert f"/usr/lib/systemd/system/{unit.name}" in files
    for conf in (ROOT / "config").rglob("*.conf"):
        assert f"/usr/share/doc/metpx-dd/examples/{conf.relative_to(ROOT / 'config')}" in files
    assert {"/usr/share/doc/metpx-dd/README.rst", "/usr/share/licenses/metpx-dd/COPYING"} <= files
    # Where EL 9's python3.9 finds it, and no bytecode of the build host's Python.
    assert "/usr/lib/python3.9/site-packages/dd/__init__.py" in files
    assert not [f for f in files if f.endswith(".pyc")]

    requires = _run(["rpm", "-qpR", rpm]).splitlines()
    for package, minimum in _minimums().items():
        assert f"{package} >= {minimum}" in requires
    # rpm's generators: python(abi) from the site-packages path, /usr/bin/python3 from the
    # commands' shebangs.
    assert {"python(abi) = 3.9", "/usr/bin/python3", "shadow-utils"} <= set(requires)
    owners = _run(["rpm", "-qp", "--qf", "[%{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]", rpm])
    assert "dd:dd /var/lib/metpx-dd\n" in owners
    assert "useradd -r -g dd -d /var/lib/metpx-dd" in _run(["rpm", "-qp", "--scripts", rpm])
