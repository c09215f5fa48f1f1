"""The fault matrix without pytest: every flow's points x modes, with counts per flow and per mode.

    .venv/bin/python bench/faults.py [--default] [--flow api_run ...] [--mode throttled ...]

Each scenario is the one `tests/faults/test_paths.py` runs (tests/faults/flows.py). Without --default it
is the exhaustive matrix (every point x every mode, what `pytest -m faults_full` adds to the default
run); --default runs the default selection only. Prints the points, modes and scenarios, how many passed,
and each failing scenario with its first violation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import flows
from tests.faults.harness import MODES, modes_for


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--default", action="store_true", help="only the default run's modes per point")
    parser.add_argument("--flow", action="append", choices=list(flows.FLOW), help="only these flows")
    parser.add_argument("--mode", action="append", choices=MODES, help="only these modes")
    args = parser.parse_args()

    started = time.monotonic()
    passed: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    failures: list[str] = []
    points = 0
    for flow in (flows.FLOW[name] for name in args.flow or flows.FLOW):
        flow_points = flows.points(flow.name)
        points += len(flow_points)
        flow_ran = flow_passed = 0
        for point in flow_points:
            modes = modes_for(point, full=not args.default)
            for mode in (m for m in modes if not args.mode or m in args.mode):
                with tempfile.TemporaryDirectory() as tmp:
                    report, _ = flows.run(flow, Path(tmp), point, mode)
                ran[mode] += 1
                flow_ran += 1
                if report.violations:
                    failures.append(f"{flow.name} {point.id} {mode}: {report.violations[0]}")
                else:
                    passed[mode] += 1
                    flow_passed += 1
        print(f"{flow.name:<22} {len(flow_points):>4} points {flow_ran:>5} scenarios {flow_passed:>5} passed")
    print()
    for mode in MODES:
        if ran[mode]:
            print(f"{mode:<22} {ran[mode]:>5} scenarios {passed[mode]:>5} passed")
    total, ok = sum(ran.values()), sum(passed.values())
    print(f"\n{points} points, {len(ran)} modes, {total} scenarios: {ok} passed, {total - ok} failed")
    print(f"{time.monotonic() - started:.0f} s")
    for failure in failures:
        print("FAILED", failure)


if __name__ == "__main__":
    main()
