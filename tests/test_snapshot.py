"""tools/snapshot: dated builds of HEAD whose versions sort after the last release, before the
next one and by commit time, for pip, dpkg and rpm alike; and nothing built twice."""
import os
import shutil
import subprocess

import pytest
from packaging.version import Version

import dd
from tests.support.metadata import ROOT


def _git(repo, *args, when=None):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    if when:
        env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"] = when
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def clone(tmp_path):
    """A clone of what is committed, where the tests make commits of their own."""
    repo = tmp_path / "src"
    _git(tmp_path, "clone", "-q", "--no-hardlinks", str(ROOT), str(repo))
    return repo


def _commit(repo, when):
    _git(repo, "commit", "-q", "--allow-empty", "-m", f"at {when}", when=when)
    return _git(repo, "rev-parse", "--short=7", "HEAD").strip()


def _versions(repo):
    out = subprocess.run(["bash", "tools/snapshot", "--versions"], cwd=repo, check=True, capture_output=True,
                         text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def _dpkg_sorted(*versions):
    return all(subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
               for a, b in zip(versions, versions[1:]))


def _rpm_sorted(*versions):
    # rpm's own comparison, through its Lua interpreter (whose print adds no newline): -1
    # when a sorts before b.
    compare = " ".join(f'print(rpm.vercmp("{a}", "{b}") .. " ")' for a, b in zip(versions, versions[1:]))
    out = subprocess.run(["rpm", "--eval", f"%{{lua: {compare}}}"], check=True, capture_output=True, text=True)
    return out.stdout.split() == ["-1"] * (len(versions) - 1)


def test_snapshot_versions_say_date_and_commit_and_sort_between_releases(clone):
    release = Version(dd.__version__)
    hash_one = _commit(clone, "2026-12-03T05:15:00+00:00")
    one = _versions(clone)
    assert one["python"] == f"{release.major}.{release.minor + 1}.0.dev20261203051500+g{hash_one}"
    assert one["debian"] == one["rpm"] == f"{release.major}.{release.minor + 1}.0~dev20261203051500+g{hash_one}"
    # A later commit the same day, whose hash may well sort before the first's.
    hash_two = _commit(clone, "2026-12-03T23:59:59-00:00")
    two = _versions(clone)
    assert hash_two in two["python"] and "dev20261203235959" in two["debian"]
    following = f"{release.major}.{release.minor + 1}.0"
    assert Version(str(release)) < Version(one["python"]) < Version(two["python"]) < Version(following)
    assert _dpkg_sorted(str(release), one["debian"], two["debian"], following)
    if shutil.which("rpm"):
        assert _rpm_sorted(str(release), one["rpm"], two["rpm"], following)


def test_a_tree_whose_version_is_not_a_release_is_refused_in_one_line(clone):
    init = clone / "dd" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{dd.__version__}"', '"0.2.0rc1"'))
    result = subprocess.run(["bash", "tools/snapshot", "--versions"], cwd=clone, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == "tools/snapshot: dd/__init__.py's version 0.2.0rc1 is not a release (N.N.N)\n"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("apt-get"),
                    reason="builds Debian and RPM packages: needs root on Debian")
def test_a_snapshot_builds_every_package_once_per_commit(clone, tmp_path):
    out = tmp_path / "snapshots"
    versions = _versions(clone)
    env = {**os.environ, "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    built = subprocess.run(["bash", "tools/snapshot", out], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=1500)
    assert built.returncode == 0, built.stdout + built.stderr
    python, package = versions["python"], versions["debian"]
    assert (out / f"metpx_dd-{python}-py3-none-any.whl").is_file()
    assert (out / f"metpx_dd-{python}.tar.gz").is_file()
    assert (out / f"metpx-dd_{package}_all.deb").is_file()
    rpm, = out.glob("metpx-dd-*.noarch.rpm")
    queried = subprocess.run(["rpm", "-qp", "--qf", "%{VERSION}", rpm], capture_output=True, text=True, check=True)
    assert queried.stdout == package
    deb_version = subprocess.run(["dpkg-deb", "-f", out / f"metpx-dd_{package}_all.deb", "Version"],
                                 capture_output=True, text=True, check=True)
    assert deb_version.stdout.strip() == package
    again = subprocess.run(["bash", "tools/snapshot", out], cwd=clone, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.startswith("tools/snapshot: nothing new"), again.stderr
