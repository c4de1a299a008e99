"""README.rst's guides as steps, and a shell that runs them the way a reader types them.

The guides mark each ``sh`` block with a comment naming the step (README.rst explains
the convention beside the guides).  `steps()` reads them with docutils; `Shell` is one
bash session in which the steps run one after another, so that the variables and the
working directory a step leaves are there for the next, as in a reader's terminal.
"""
import contextlib
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import docutils.core
import docutils.nodes

README = Path(__file__).resolve().parents[2] / "README.rst"
MARKER = re.compile(r"step: ([a-z0-9-]+)(?:, (names|not run: (.+)))?", re.DOTALL)
RUN, NAMES, NOT_RUN = "run", "names", "not run"


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    mode: str           # RUN, NAMES or NOT_RUN
    script: str
    line: int           # of the marker in README.rst
    section: str
    reason: str = ""    # why a NOT_RUN step is not run

    def __str__(self):
        return f"guide step {self.name!r} (README.rst line {self.line}, in {self.section!r})"

    def assignments(self):
        """{variable: value} of a NAMES step, which may hold nothing but assignments."""
        found = {}
        for word in shlex.split(self.script, comments=True):
            variable, equals, value = word.partition("=")
            if not equals or not re.fullmatch(r"[A-Za-z_]\w*", variable):
                raise ValueError(f"{self}: a names block holds only NAME=VALUE words, not {word!r}")
            found[variable] = value
        return found


def _section_title(node):
    while node is not None and not isinstance(node, docutils.nodes.section):
        node = node.parent
    return node[0].astext() if node is not None else ""


def _doctree(text):
    return docutils.core.publish_doctree(text, settings_overrides={
        "syntax_highlight": "none", "report_level": 4, "halt_level": 4})


def code_blocks(language, text=None):
    """The text of every ``.. code-block:: LANGUAGE`` of README.rst."""
    doctree = _doctree(README.read_text(encoding="utf-8") if text is None else text)
    return [n.astext() + "\n" for n in doctree.findall(docutils.nodes.literal_block) if language in n["classes"]]


def steps(text=None):
    """Every marked ``sh`` block of README.rst, in order.  ValueError if an ``sh`` block
    has no marker, a marker no block, or two steps share a name."""
    text = README.read_text(encoding="utf-8") if text is None else text
    lines = text.splitlines()
    found, marker = [], None
    for node in _doctree(text).findall(lambda n: isinstance(n, (docutils.nodes.comment, docutils.nodes.literal_block))):
        if isinstance(node, docutils.nodes.comment):
            match = MARKER.fullmatch(" ".join(node.astext().split()))
            if match:
                if marker:
                    raise ValueError(f"step {marker.group(1)!r} is followed by no sh block")
                marker = match
            continue
        if "sh" not in node["classes"]:
            continue
        if marker is None:
            raise ValueError(f"an sh block has no step marker: {node.astext().splitlines()[0]!r}")
        name, kind, reason = marker.groups()
        line = next(i for i, t in enumerate(lines, 1) if re.match(rf"\.\. step: {re.escape(name)}\b", t))
        found.append(Step(name, {None: RUN, "names": NAMES}.get(kind, NOT_RUN), node.astext() + "\n", line,
                          _section_title(node), reason or ""))
        marker = None
    if marker:
        raise ValueError(f"step {marker.group(1)!r} is followed by no sh block")
    names = [s.name for s in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"steps named twice: {duplicates}")
    return found


class StepFailed(AssertionError):
    pass


class Shell:
    """One bash session (set -euo pipefail) fed step after step.  Each step is sourced
    from a file with its output in another, and stdin from /dev/null, so no command can
    read the steps that follow; errexit ends the session at a step's first failure."""

    def __init__(self, directory, env, cwd):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count = 0
        with open(self.directory / "shell.log", "wb") as log:
            self.process = subprocess.Popen(["bash", "--norc", "--noprofile"], stdin=subprocess.PIPE,
                                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                            text=True, start_new_session=True)
        self._send("set -euo pipefail")

    def _send(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def run(self, step, script, timeout):
        """(exit status, output) of `script`, sourced in the session."""
        self.count += 1
        stem = self.directory / f"{self.count:02d}-{step.name}"
        script_file, out, status = (stem.with_suffix(s) for s in (".sh", ".out", ".status"))
        script_file.write_text(script)
        self._send(f"source {shlex.quote(str(script_file))} > {shlex.quote(str(out))} 2>&1 < /dev/null; "
                   f"echo $? > {shlex.quote(str(status))}.tmp; mv {shlex.quote(str(status))}.tmp "
                   f"{shlex.quote(str(status))}")
        deadline = time.monotonic() + timeout
        while not status.exists():
            if self.process.poll() is not None:
                return self.process.returncode, self._read(out)
            if time.monotonic() > deadline:
                self.close()
                return None, self._read(out) + f"\n(no end within {timeout} s: the session was killed)"
            time.sleep(0.02)
        return int(status.read_text()), self._read(out)

    @staticmethod
    def _read(path):
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self):
        """End the session: at the end of its input, or killed with what it runs."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
