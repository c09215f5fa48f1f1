"""The fault matrix is parametrized from clean runs of each flow; `faults_full` runs only when selected.

Under pytest-xdist the controller makes the clean runs once and hands their points to every worker
(tests/conftest.py `pytest_configure_node`): workers must collect the same scenarios in the same order."""

from __future__ import annotations

import pytest

from tests.faults import flows
from tests.faults.harness import MODES, Point, modes_for

HANDED = "fault_points"  # the workerinput key of the points the xdist controller found


def points(config: pytest.Config, flow: str) -> tuple[Point, ...]:
    """The flow's points: those handed to this xdist worker, or from a clean run in this process."""
    handed = getattr(config, "workerinput", {}).get(HANDED)
    if handed is None:
        return flows.points(flow)
    return tuple(Point(*fields) for fields in handed[flow])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario" not in metafunc.fixturenames:
        return
    full = metafunc.definition.get_closest_marker("faults_full") is not None
    params = [
        _scenario(flow, point, mode)
        for flow in flows.FLOWS
        for point in points(metafunc.config, flow.name)
        for mode in (m for m in MODES if (m in modes_for(point, full=False)) != full)
    ]
    metafunc.parametrize("scenario", params)


def _scenario(flow: flows.Flow, point: Point, mode: str) -> object:
    """One scenario's parameter; a known defect's is expected to fail (flows.KNOWN_DEFECTS)."""
    scenario = f"{flow.name}-{point.id}-{mode}"
    defect = flows.KNOWN_DEFECTS.get(scenario)
    marks = [pytest.mark.xfail(raises=AssertionError, strict=True, reason=defect)] if defect else []
    return pytest.param((flow, point, mode), id=scenario, marks=marks)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The exhaustive matrix (`faults_full`) runs only when `-m` names it."""
    if "faults_full" in (config.option.markexpr or ""):
        return
    full = [item for item in items if item.get_closest_marker("faults_full")]
    if full:
        config.hook.pytest_deselected(items=full)
        items[:] = [item for item in items if not item.get_closest_marker("faults_full")]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The matrix's counts: flows, points, modes and scenarios run, how many passed, and how many failed
    as a known defect does (xfail)."""
    reports = [
        report
        for outcome in ("passed", "failed", "error", "xfailed")
        for report in terminalreporter.stats.get(outcome, [])
        if report.when == "call" and "::test_fault" in report.nodeid
    ]
    if not reports:
        return
    scenarios = [report.nodeid.rsplit("[", 1)[1].rstrip("]") for report in reports]
    points = {scenario.rsplit("-", 1)[0] for scenario in scenarios}
    modes = {scenario.rsplit("-", 1)[1] for scenario in scenarios}
    passed = sum(report.passed and not hasattr(report, "wasxfail") for report in reports)
    known = sum(hasattr(report, "wasxfail") and report.skipped for report in reports)
    terminalreporter.write_line(
        f"fault matrix: {len(points)} points, {len(modes)} modes, {len(scenarios)} scenarios,"
        f" {passed} passed, {len(scenarios) - passed - known} failed, {known} known defects (xfail)"
    )
