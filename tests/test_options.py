"""The options table, its value types, and the man page generated from it."""
import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dd.cli import manpage
from dd.core import config, options
from dd.core.credentials import Url
from dd.core.options import BY_NAME, COMPONENTS, OPTIONS

MAN_PAGE = Path(__file__).resolve().parent.parent / "man" / "dd_options.5"


@pytest.mark.parametrize("text, size", [
    ("0", 0), ("4096", 4096), ("512k", 512 << 10), ("512K", 512 << 10), ("64M", 64 << 20),
    ("1G", 1 << 30), ("2T", 2 << 40), ("1.5G", 3 << 29), ("10MiB", 10 << 20), ("3b", 3),
    (" 8 kb ", 8 << 10),
])
def test_sizes(text, size):
    assert options.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1", "1X", "1.2.3", "64 M M", "1e3", "ten"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        options.parse_size(text)


@pytest.mark.parametrize("text, seconds", [
    ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0),
    ("1w", 604800.0), ("0.5", 0.5), ("1.5m", 90.0), (".25s", 0.25), ("0", 0.0),
])
def test_durations(text, seconds):
    assert options.parse_duration(text) == seconds
    assert isinstance(options.parse_duration(text), float)


@pytest.mark.parametrize("text", ["", "s", "-5s", "5x", "inf", "nan", "1e3", "5 minutes"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        options.parse_duration(text)


@pytest.mark.parametrize("text, value", [
    ("on", True), ("YES", True), ("true", True), ("1", True),
    ("off", False), ("No", False), ("false", False), ("0", False),
])
def test_bools(text, value):
    assert options.parse_bool(text) is value


def test_bad_bool():
    with pytest.raises(ValueError):
        options.parse_bool("maybe")


def test_list_takes_commas_and_spaces():
    assert options.LIST.parse("a, b c,,d") == ("a", "b", "c", "d")
    assert options.LIST.format(("http", "https")) == "http https"
    with pytest.raises(ValueError):
        options.LIST.parse(" , ")


def test_other_kinds():
    assert BY_NAME["checksum"].kind.parse("SHA256") == "sha256"
    with pytest.raises(ValueError):
        BY_NAME["checksum"].kind.parse("crc32")
    assert BY_NAME["accept"].kind.parse(r".*\.txt").fullmatch("a/b.txt")
    with pytest.raises(ValueError, match="missing"):
        BY_NAME["accept"].kind.parse("(unclosed")
    assert BY_NAME["on_file"].kind.parse("  gzip -9 'a b' ") == "gzip -9 'a b'"
    with pytest.raises(ValueError):
        BY_NAME["on_file"].kind.parse("echo 'unbalanced")
    assert BY_NAME["strip"].kind.parse("2") == 2
    with pytest.raises(ValueError):
        BY_NAME["strip"].kind.parse("-1")
    with pytest.raises(ValueError, match="at least 1"):
        BY_NAME["instances"].kind.parse("0")
    assert BY_NAME["broker"].kind.parse("amqps://bob@host/") == Url("amqps", "bob", "host", 5671)
    with pytest.raises(ValueError, match="amqp or amqps"):
        BY_NAME["broker"].kind.parse("https://host/")
    with pytest.raises(ValueError):
        BY_NAME["subtopic"].kind.parse("# all topics")


@given(st.integers(min_value=0, max_value=1 << 62))
def test_size_format_round_trips(size):
    assert options.parse_size(options.format_size(size)) == size


@given(st.one_of(st.integers(min_value=0, max_value=10 ** 12).map(float),
                 st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)))
def test_duration_format_round_trips(seconds):
    text = options.format_duration(seconds)
    assert options.parse_duration(text) == seconds
    assert "e" not in text


def test_formats_pick_the_largest_exact_unit():
    assert options.format_size(64 << 20) == "64M"
    assert options.format_size(1000) == "1000"
    assert options.format_duration(300.0) == "5m"
    assert options.format_duration(90.0) == "90s"
    assert options.format_duration(0.0) == "0s"


def test_table_is_consistent():
    assert len(BY_NAME) == len(OPTIONS)
    for option in OPTIONS:
        assert re.fullmatch(r"[a-z][a-z_]*", option.name)
        assert option.components and option.components <= set(COMPONENTS), option.name
        assert option.help and "\n" not in option.help, option.name
        assert set(option.component_defaults) <= option.components, option.name
    ordered = {o.name for o in OPTIONS if o.ordered and not o.repeat}
    assert ordered == set(config.DELIVERY)
    assert {f.name for f in dataclasses.fields(config.Mask)} >= ordered


def test_option_names_do_not_shadow_config_attributes():
    assert not set(BY_NAME) & set(dir(config.Config))
    assert not set(BY_NAME) & {"component", "name", "file", "masks", "credentials"}


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_default_parses(component):
    for option in OPTIONS:
        text = option.default_for(component)
        if text is not None:
            text = text.replace("${POST_BROKER_USER}", "bob").replace("${BROKER_USER}", "bob")
            option.kind.parse(text)


def test_options_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BY_NAME["prefetch"].default = "1"
    with pytest.raises(TypeError):
        BY_NAME["post_exchange"].component_defaults["post"] = "x"
    assert BY_NAME["post_exchange"].default_for("post") == "xs_${POST_BROKER_USER}"
    assert BY_NAME["post_exchange"].default_for("shovel") == "xpublic"


def test_man_page_is_fresh():
    assert MAN_PAGE.read_text(encoding="utf-8") == manpage.render(), \
        "regenerate: python -m dd.cli.manpage > man/dd_options.5"


def test_man_page_documents_every_option():
    page = manpage.render()
    for option in OPTIONS:
        assert f"\\fB{option.name}\\fP \\fI{option.kind.name}\\fP" in page
    assert ".TH DD_OPTIONS 5" in page


def test_roff_escaping():
    assert manpage._roff(".*\\.txt-x") == "\\&.*\\e.txt\\-x"
    assert manpage._roff("'quoted") == "\\&'quoted"


@pytest.mark.skipif(not shutil.which("groff"), reason="groff not installed")
def test_man_page_renders_without_warnings():
    result = subprocess.run(["groff", "-wall", "-man", "-Tutf8"], input=manpage.render(),
                            capture_output=True, text=True, check=True)
    assert result.stderr == ""
