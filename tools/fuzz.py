#!/usr/bin/env python3
"""The long fuzz run: generated messages through decode → validate → path builder → a
write, in a sandbox.  Prints a table: messages, outcomes by rule, unhandled errors and
writes outside the sandbox (both must be 0; the exit status is 1 otherwise).

    python tools/fuzz.py                 # 1,000,000 messages, atheris (libFuzzer) if installed
    python tools/fuzz.py --runs 20000    # a quick look
    python tools/fuzz.py --engine hypothesis --runs 20000

atheris mutates a seed corpus of valid dd, sr_v03 and sr_v02 messages; the first byte of
each input picks one of HEADER_SETS for the AMQP headers.  The fast subset of the same
target runs in the test suite (tests/test_fuzz.py).
"""
import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dd.core import paths  # noqa: E402
from tests.support.fuzzing import exercise, snapshot  # noqa: E402

HEADER_SETS = [{}, {"sum": "s," + "ab" * 64, "parts": "1,5,1,0,0"}, {"sum": "L,x", "link": "../../etc"},
               {"sum": "R,0"}, {"sum": "d," + "0" * 32, "oldname": "../a", "parts": "i,4,3,2,1"},
               {"sum": "n,x", "mode": "4777", "source": "eve\n"}]
SEEDS = [
    b'{"pubtime":"2026-11-29T06:00:00.000000Z","base_url":"http://127.0.0.1/","rel_path":"a/b c.txt",'
    b'"source":"ann","from_cluster":"","to_clusters":[],"op":"write","size":3,'
    b'"checksum":{"method":"md5","value":"00000000000000000000000000000000"}}',
    b'{"pubtime":"2026-11-29T06:00:00.000000Z","base_url":"http://127.0.0.1/","rel_path":"l",'
    b'"source":"ann","from_cluster":"","to_clusters":[],"op":"link","link_target":"x/y"}',
    b'{"pubTime":"20261129T060000.123","baseUrl":"http://127.0.0.1/","relPath":"x/y.dat",'
    b'"identity":{"method":"sha512","value":"q83vEjRWeJA="},"size":4}',
    b"20261129060000.123 http://127.0.0.1/ obs/%20x/y.txt",
]


class Run:
    def __init__(self, work):
        self.parent = Path(work)
        (self.parent / "outside.txt").write_text("must stay")
        self.root = self.parent / "sandbox"
        self.root.mkdir()
        self.tree = paths.Tree(self.root)
        self.before = snapshot(self.parent, self.root)
        self.outcomes = collections.Counter()
        self.unhandled = []
        self.started = None

    def one(self, body, headers):
        self.started = self.started or time.monotonic()  # not counting the engine's start-up
        try:
            self.outcomes[exercise(body, headers, self.tree)] += 1
        except Exception as error:  # noqa: BLE001 - counted and shown: each is a bug
            self.outcomes["UNHANDLED"] += 1
            if len(self.unhandled) < 5:
                self.unhandled.append((body[:120], headers, repr(error)))

    def report(self):
        outside = {p: s for p, s in snapshot(self.parent, self.root).items() if self.before.get(p) != s}
        total = sum(self.outcomes.values())
        seconds = time.monotonic() - (self.started or time.monotonic())
        print(f"\n{'outcome':<24}{'messages':>12}")
        for outcome, count in self.outcomes.most_common():
            print(f"{outcome:<24}{count:>12,}")
        print(f"{'total':<24}{total:>12,}   ({seconds:.0f} s, {total / max(seconds, 1e-9):,.0f}/s)")
        print(f"{'unhandled errors':<24}{self.outcomes['UNHANDLED']:>12,}")
        print(f"{'written outside':<24}{len(outside):>12,}")
        for body, headers, error in self.unhandled:
            print(f"  unhandled: {error} on {body!r} {headers}")
        for path in list(outside)[:5]:
            print(f"  outside: {path}")
        sys.stdout.flush()
        if self.outcomes["UNHANDLED"] or outside:
            os._exit(1)


def with_atheris(run, runs):
    import atheris

    def target(data):
        if data:
            run.one(data[1:], HEADER_SETS[data[0] % len(HEADER_SETS)])
        if sum(run.outcomes.values()) >= runs:
            # libFuzzer ends the process with C's exit(), which skips Python's atexit.
            run.report()
            os._exit(0)

    corpus = Path(tempfile.mkdtemp(prefix="dd-fuzz-corpus-"))
    for number, seed in enumerate(SEEDS):
        for selector in range(len(HEADER_SETS)):
            (corpus / f"seed{number}-{selector}").write_bytes(bytes([selector]) + seed)
    atheris.instrument_all()  # coverage feedback from dd's code, so mutations go somewhere
    # -close_fd_mask=2 silences libFuzzer's progress lines (stderr); the table goes to stdout.
    atheris.Setup([sys.argv[0], "-max_len=2048", "-print_final_stats=0", "-close_fd_mask=2", str(corpus)],
                  target)
    atheris.Fuzz()


def with_hypothesis(run, runs):
    from hypothesis import HealthCheck, given, settings

    from tests.test_fuzz import message

    @settings(max_examples=runs, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(message=message)
    def target(message):
        run.one(*message)

    target()
    run.report()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default=None)
    args = parser.parse_args()
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    print(f"fuzzing {args.runs:,} messages with {engine}")
    with tempfile.TemporaryDirectory(prefix="dd-fuzz-") as work:
        run = Run(work)
        (with_atheris if engine == "atheris" else with_hypothesis)(run, args.runs)


if __name__ == "__main__":
    main()
