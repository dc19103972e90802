"""pytest plugin (registered as the `synthaudit` pytest11 entry point): the `synthaudit_gate`
fixture, for a project's own CI to fail when an audited release leaks.

    def test_release_does_not_leak(synthaudit_gate):
        synthaudit_gate("runs/nightly")                      # shipped default thresholds
        synthaudit_gate("runs/nightly", "ci/thresholds.toml")

Imports nothing heavy until the fixture is used, so other projects' test runs stay fast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def synthaudit_gate() -> Callable[..., Any]:
    """assert_within_thresholds(run_dir, thresholds=None, *, leakage_only=False)."""
    from reports.verdict import assert_within_thresholds

    return assert_within_thresholds
