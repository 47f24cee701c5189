"""A name that cannot be a model's is refused in one line before it reaches an MLflow search filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import registry
from conveyor.errors import RegistryError


@pytest.mark.parametrize("name", ["bre'ast", 'a"b', "x' or name like '%", "", "../etc"])
def test_names_that_would_break_a_filter_are_refused(project: Path, name: str) -> None:
    for lookup in (registry.list_versions, registry.audit_trail):
        with pytest.raises(RegistryError, match="is not a model name") as caught:
            lookup(name)
        assert caught.value.exit_code == 4


def test_a_plain_name_with_no_model_is_simply_empty(project: Path) -> None:
    assert registry.list_versions("breast_cancer.v2-x") == []
