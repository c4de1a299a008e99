"""The man pages: they render without warnings, every command has one, and the
options the hand-written pages name exist in the options table."""
import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dd.admin.ctl import main as ctl_main
from dd.admin.ctl import survey
from dd.cli import main as cli
from dd.core.options import BY_NAME
from dd.core.outcome import Code
from tests.support.metadata import console_scripts

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"
PAGES = sorted(p for p in MAN.iterdir() if re.fullmatch(r"[\w.-]+\.[1-9]", p.name))
#: Hand-written command pages, and the component whose options each may name.
COMMAND_PAGES = {"dd_post.1": "post", "dd_subscribe.1": "subscribe", "dd_watch.1": "watch", "dd_poll.1": "poll",
                 "dd_sara.1": "sara", "dd_shovel.1": "shovel", "dd_audit.8": "audit", "dd_log.1": "log",
                 "dd_sender.1": "sender"}
#: Command-line words that are not options of dd.core.options, with the component
#: that takes them; its parser must really handle each.
NOT_OPTIONS = {"delete": {"post"}, "rename": {"post"}, "config": {"post", "audit"},
               "help": {"post", "subscribe", "watch", "poll", "sara", "sender"}, "dry": {"audit"}, "prune": {"audit"},
               "json": {"audit", "log"}, "follow": {"log"}, "trace": {"log"}, "password": {"audit"},
               "acl": {"audit"}}
_OPTION = re.compile(r"\\-\\-([A-Za-z0-9_]+)")


def test_pages_found():
    names = {p.name for p in PAGES}
    assert "dd_options.5" in names
    assert set(COMMAND_PAGES) <= names
    assert "dd_post.7" in names


@pytest.mark.skipif(not shutil.which("groff"), reason="groff is not installed")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_renders_without_warnings(page):
    # -wall leaves out undefined macros (-wmac): a text line starting with '.' or "'".
    result = subprocess.run(["groff", "-wall", "-wmac", "-man", "-Tutf8", str(page)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_th_names_the_page(page):
    name, section = page.name.rsplit(".", 1)
    th = next(line for line in page.read_text(encoding="utf-8").splitlines() if line.startswith(".TH "))
    assert th.split()[1:3] == [name.upper(), section]


def test_every_command_has_a_page_in_section_1_or_8():
    scripts = console_scripts()
    assert scripts and all(s.startswith("dd_") for s in scripts)
    missing = [s for s in scripts if not any((MAN / f"{s}.{n}").is_file() for n in (1, 8))]
    assert not missing, f"no man/<command>.1 (or .8 for admin commands) for {missing}"


def test_dd_ctl_page_names_every_verb_and_flag():
    text = (MAN / "dd_ctl.8").read_text(encoding="utf-8").replace("\\-", "-")
    for verb, parser in ctl_main.parser().verbs.items():
        assert f"\n.B {verb}\n" in text, f"dd_ctl.8 has no entry for {verb}"
        flags = set(re.findall(r"--[\w-]+", parser.format_usage())) - {"--help"}
        missing = sorted(f for f in flags if f not in text)
        assert not missing, f"dd_ctl.8 does not name {verb} {missing}"


def test_dd_ctl_page_documents_every_status_json_field():
    text = (MAN / "dd_ctl.8").read_text(encoding="utf-8")
    section = text[text.index(".SS STATUS AS JSON"):text.index(".SH CHECK")]
    fields = [f.name for f in dataclasses.fields(survey.Facts) if f.name != "cfg"]
    assert set(survey.Facts("c", "n", "running", 0).as_json()) == set(fields)
    missing = [f for f in ["status", "time", "configurations"] + fields if f".B {f}\n" not in section
               and f".BR {f} " not in section]
    assert not missing, f"dd_ctl.8 STATUS AS JSON does not describe {missing}"


@pytest.mark.skipif(not shutil.which("man"), reason="man-db is not installed")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_renders_without_warnings(page):
    # What a user (and lintian) sees: man's own preprocessing and groff's warnings.
    env = {"PATH": os.environ["PATH"], "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    result = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip()


@pytest.mark.parametrize("page, component", sorted(COMMAND_PAGES.items()))
def test_options_named_exist(page, component):
    text = (MAN / page).read_text(encoding="utf-8")
    named = set(_OPTION.findall(text))
    assert named, f"{page} names no \\-\\-options"
    unknown = sorted(n for n in named if n not in BY_NAME and n not in NOT_OPTIONS)
    assert not unknown, f"{page} names options dd.core.options does not have: {unknown}"
    foreign = sorted(n for n in named if n in BY_NAME and component not in BY_NAME[n].components)
    assert not foreign, f"{page} names options dd_{component} refuses: {foreign}"
    for word in named & set(NOT_OPTIONS):
        assert component in NOT_OPTIONS[word]


def _flags_described(parser):
    """The help of a parser and of its verbs, less their usage lines (which may be written
    by hand): what argparse says of the flags it really has."""
    parsers = [parser, *parser.verbs.values()]
    return "".join(p.format_help().replace(p.format_usage(), "") for p in parsers)


def test_not_options_are_handled_by_the_cli():
    for word, components in NOT_OPTIONS.items():
        assert word not in BY_NAME
        for component in components:
            # A prefix: the pages' option pattern reads --dry-run as --dry.
            assert f"--{word}" in _flags_described(cli.parser(component)), (word, component)


@pytest.mark.parametrize("page", sorted(COMMAND_PAGES) + ["dd_post.7", "dd_ctl.8"])
def test_hyphens_in_option_names_are_escaped(page):
    for number, line in enumerate((MAN / page).read_text(encoding="utf-8").splitlines(), 1):
        assert "--" not in line, f"{page}:{number}: write \\-\\- for --"


@pytest.mark.parametrize("page, start, end", [("dd_log.7", ".SH CODES", ".SH SEE ALSO"),
                                              ("dd_subscribe.1", "Each outcome is logged", ".SH REFUSALS")])
def test_every_outcome_code_is_documented(page, start, end):
    text = (MAN / page).read_text(encoding="utf-8")
    section = text[text.index(start):text.index(end)]
    documented = {int(n) for n in re.findall(r"^\.B (\d{3})$", section, re.MULTILINE)}
    assert documented == {int(c) for c in Code}, f"{page} documents {sorted(documented)}"
