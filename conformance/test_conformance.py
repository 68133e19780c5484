"""Every registered check as a pytest test (see conftest.py for --tus-url)."""

from __future__ import annotations

import pytest

from conformance.conftest import RESULTS
from conformance.runner import Check, Target, run_check, selected


@pytest.mark.parametrize("item", selected(), ids=lambda c: f"{c.extension}::{c.name}")
def test_check(target: Target, item: Check) -> None:
    result = run_check(target, item)
    RESULTS.append(result)
    if result.outcome == "skipped":
        pytest.skip(result.detail)
    assert result.outcome == "passed", f'{result.detail}\nspec ({item.section}): "{item.quote}"'
