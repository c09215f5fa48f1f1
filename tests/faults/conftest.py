"""The fault matrix is parametrized from clean runs of each flow; `faults_full` runs only when selected."""

from __future__ import annotations

import pytest

from tests.faults import flows
from tests.faults.harness import MODES, modes_for


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario" not in metafunc.fixturenames:
        return
    full = metafunc.definition.get_closest_marker("faults_full") is not None
    params = [
        pytest.param((flow, point, mode), id=f"{flow.name}-{point.id}-{mode}")
        for flow in flows.FLOWS
        for point in flows.points(flow.name)
        for mode in (m for m in MODES if (m in modes_for(point, full=False)) != full)
    ]
    metafunc.parametrize("scenario", params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The exhaustive matrix (`faults_full`) runs only when `-m` names it."""
    if "faults_full" in (config.option.markexpr or ""):
        return
    full = [item for item in items if item.get_closest_marker("faults_full")]
    if full:
        config.hook.pytest_deselected(items=full)
        items[:] = [item for item in items if not item.get_closest_marker("faults_full")]
