"""One table of outcome codes: dd/core/outcome.py names every code dd reports, and no
module writes one as a bare number; every exit status enum names each number once."""
import io
import tokenize
from http import HTTPStatus
from pathlib import Path

import pytest

import dd
from dd.core.errors import CheckStatus, ExitStatus, LsbStatus
from dd.core.outcome import Code, Outcome

ROOT = Path(dd.__file__).parent
TABLE = ROOT / "core" / "outcome.py"
#: Numbers that read as an outcome code or an HTTP error status: each has a name,
#: in the table or in http.HTTPStatus.
CODE_LIKE = {int(c) for c in Code} | {int(s) for s in HTTPStatus if s >= 400}


def bare_codes(path):
    """(line, number) of each number token in `path` that reads as a code; strings and
    comments (log text, nginx configuration, man-page text) are not looked at."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return [(t.start[0], t.string) for t in tokens
            if t.type == tokenize.NUMBER and t.string.isdigit() and int(t.string) in CODE_LIKE]


def test_no_module_writes_an_outcome_code_as_a_bare_number():
    found = {str(p.relative_to(ROOT.parent)): bare_codes(p) for p in sorted(ROOT.rglob("*.py")) if p != TABLE}
    found = {path: hits for path, hits in found.items() if hits}
    assert not found, f"name these codes (dd.core.outcome.Code, http.HTTPStatus): {found}"


def test_the_scan_finds_a_bare_code(tmp_path):
    # The test above passes on an empty scan too: it must see what it is looking for.
    module = tmp_path / "m.py"
    module.write_text('x = Outcome(404, "404 in a string")  # 502 in a comment\n', encoding="utf-8")
    assert bare_codes(module) == [(1, "404")]


def test_every_code_of_the_table_is_of_the_class_its_meaning_says():
    done = {Code.DELIVERED, Code.PART_STORED, Code.UNCHANGED}
    refused = {Code.REFUSED_NOTICE, Code.DENIED, Code.NOT_FOUND, Code.SUPERSEDED, Code.WHOLE_MISMATCH}
    failed = {Code.FAILED, Code.TRANSFER_FAILED, Code.GIVEN_UP, Code.NO_SPACE}
    assert done | refused | failed == set(Code)
    assert all(Outcome(c).ok for c in done)
    assert not any(Outcome(c).ok or Outcome(c).failed for c in refused)   # never kept for retry
    assert all(Outcome(c).failed and not Outcome(c).ok for c in failed)   # kept for retry


def test_a_checksum_failure_is_not_reported_as_not_found():
    from dd.core.errors import ChecksumMismatch
    from dd.delivery.receive import WholeMismatch
    assert ChecksumMismatch.code == Code.TRANSFER_FAILED
    assert WholeMismatch.code == Code.WHOLE_MISMATCH != Code.NOT_FOUND
    assert not WholeMismatch.retryable


@pytest.mark.parametrize("statuses", [Code, ExitStatus, LsbStatus, CheckStatus], ids=lambda e: e.__name__)
def test_no_number_has_two_names(statuses):
    # An alias makes the number print the other name: ExitStatus(4) once printed UNAVAILABLE
    # where `status` meant LSB's "unknown".
    assert len(statuses.__members__) == len(statuses), {n: m.value for n, m in statuses.__members__.items()}


def test_status_names_print_what_their_numbers_mean():
    assert (LsbStatus(0).name, LsbStatus(1).name, LsbStatus(3).name, LsbStatus(4).name) == (
        "RUNNING", "DEAD", "NOT_RUNNING", "UNKNOWN")
    assert (ExitStatus(4).name, ExitStatus(2).name) == ("UNAVAILABLE", "USAGE")
