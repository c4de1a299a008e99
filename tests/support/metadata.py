"""What setup.py declares, read by running it with setuptools.setup() captured."""
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[2]


def setup_arguments():
    """The keyword arguments setup.py passes to setuptools.setup()."""
    captured = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        path = ROOT / "setup.py"
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"),  # noqa: S102
             {"__file__": str(path), "__name__": "setup"})
    finally:
        setuptools.setup = original
    return captured


def console_scripts():
    """The names of the commands setup.py installs."""
    entries = setup_arguments()["entry_points"]["console_scripts"]
    return [entry.split("=")[0].strip() for entry in entries]
