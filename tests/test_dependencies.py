"""dd runs on the Pythons to come: nothing it imports, itself or through its libraries, is a
standard module that Python 3.12 or 3.13 removed (PEP 594's dead batteries, distutils, imp)."""
import subprocess
import sys

REMOVED = {
    # 3.12
    "asynchat", "asyncore", "distutils", "imp", "smtpd",
    # 3.13
    "aifc", "audioop", "cgi", "cgitb", "chunk", "crypt", "imghdr", "lib2to3", "mailcap", "msilib", "nis",
    "nntplib", "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "tkinter.tix", "uu", "xdrlib",
}

# Every module of dd, in a fresh interpreter: what they import, the libraries included, is
# then in sys.modules.
IMPORT_ALL = """
import importlib, pkgutil, sys
import dd
for module in pkgutil.walk_packages(dd.__path__, "dd."):
    importlib.import_module(module.name)
print("\\n".join(sorted(sys.modules)))
"""


def test_nothing_dd_imports_is_a_module_newer_pythons_removed():
    imported = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, check=True)
    modules = set(imported.stdout.split())
    assert any(name.startswith("dd.pump.") for name in modules) and "paramiko" in modules
    assert not {name for name in modules if name.split(".")[0] in REMOVED or name in REMOVED}
