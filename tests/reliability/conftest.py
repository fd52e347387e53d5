"""Report how much the crash harness's disk models did (issue 11: they must apply).

Each test's share of `faultfs.STATS` (disks checked, torn files, partial-rename states) is
added up per test file and printed in the terminal summary, so that a run shows the torn
and partial-rename models reached the files rather than repeating the power-loss case.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest

from .faultfs import STATS, HarnessStats

if TYPE_CHECKING:
    from collections.abc import Iterator

_BY_FILE: defaultdict[str, HarnessStats] = defaultdict(HarnessStats)


@pytest.fixture(autouse=True)
def _count_disk_models(request: pytest.FixtureRequest) -> Iterator[None]:
    before = dataclasses.replace(STATS)
    yield
    total = _BY_FILE[request.node.path.name]
    total.disks += STATS.disks - before.disks
    total.tears += STATS.tears - before.tears
    total.partial_renames += STATS.partial_renames - before.partial_renames


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counted = {name: stats for name, stats in sorted(_BY_FILE.items()) if stats.disks}
    if not counted:
        return
    terminalreporter.section("crash harness")
    for name, stats in counted.items():
        terminalreporter.write_line(
            f"{name}: {stats.disks} crash disks checked, {stats.tears} torn writes applied, "
            f"{stats.partial_renames} partial-rename states checked"
        )
