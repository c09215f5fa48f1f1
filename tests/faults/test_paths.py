"""Every request of every path, one fault at a time: each scenario recovers as production does and must
end with every invariant holding (see harness.Stack.violations).

The default run gives each point the modes that differ for it (a read: throttled; a write: crash after
it was applied, applied then an error, duplicated); `-m faults_full` runs every other mode too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import flows
from tests.faults.harness import Point


@pytest.mark.parametrize("flow", flows.FLOWS, ids=str)
def test_the_clean_run_of_each_flow_holds_every_invariant(flow: flows.Flow, tmp_path: Path) -> None:
    report, points = flows.run(flow, tmp_path)
    assert points
    assert report.violations == []


def _check(scenario: tuple[flows.Flow, Point, str], tmp_path: Path) -> None:
    flow, point, mode = scenario
    report, _ = flows.run(flow, tmp_path, point, mode)
    assert report.violations == [], f"{mode} at {point.id}"


def test_fault(scenario: tuple[flows.Flow, Point, str], tmp_path: Path) -> None:
    _check(scenario, tmp_path)


@pytest.mark.faults_full
def test_fault_every_other_mode(scenario: tuple[flows.Flow, Point, str], tmp_path: Path) -> None:
    _check(scenario, tmp_path)
