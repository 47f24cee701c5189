"""The two UIs in a real browser (Debian's chromium driven by Playwright), on a running stack.

Screenshots land in tests/artifacts/ (git-ignored) for the CI run to keep.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import browser
from tests.e2e.browser import NEEDS_CHROMIUM, chromium_page
from tests.e2e.harness import NIGHTLY, ON_DEMAND, Stack
from tests.factories import classification_frame, write_csv, write_spec

MODEL = "browser"
UI_TIMEOUT_MS = 90_000

STACK = "ui"  # the shared stack this module runs on (tests/e2e/conftest.py)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(1200),
    NEEDS_CHROMIUM,
]


def stack_project(root: Path) -> None:
    """The model shown in the UIs; it trains only when this module asks."""
    write_csv(root, "data/browser.csv", classification_frame(rows=300, seed=2))
    write_spec(root, MODEL, "../data/browser.csv", **ON_DEMAND)


@pytest.fixture(scope="module")
def trained_stack(running_stack: Stack) -> Stack:
    """The module's shared stack, on which the training deployment ran once for MODEL, as Run would."""
    run = running_stack.run_deployment("training/training", {"spec": MODEL})
    (final,) = running_stack.wait_final([run.id])
    assert final.state.is_completed(), f"{final.state.message}\n{running_stack.tail()}"
    return running_stack


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with chromium_page() as opened:
        yield opened


def screenshot(page: Any, name: str) -> None:
    browser.screenshot(page, name, full_page=True)


def test_prefect_ui_lists_the_training_deployments(trained_stack: Stack, page: Any) -> None:
    names = (f"train-{MODEL}", f"train-{NIGHTLY}")
    with trained_stack.prefect() as client:
        ids = {name: client.read_deployment_by_name(f"training/{name}").id for name in names}
        generic = client.read_deployment_by_name("training/training").id
    page.goto(f"http://127.0.0.1:{trained_stack.prefect_port}/deployments")
    search = page.get_by_placeholder("Search deployments")
    search.wait_for(timeout=UI_TIMEOUT_MS)
    # The list is paged (a shared stack deploys a `train-*` per spec of its modules): find each
    # deployment by its full name, as a user would.
    for name, deployment_id in ids.items():
        search.fill(name)
        link = page.locator(f'a[href="/deployments/deployment/{deployment_id}"]')
        link.wait_for(timeout=UI_TIMEOUT_MS)
        assert link.count() == 1 and link.inner_text().strip() == name
        row = page.get_by_role("row").filter(has=link)
        if name == f"train-{NIGHTLY}":
            assert "At 02:00 AM every day" in row.first.inner_text()  # the default schedule of a spec
    screenshot(page, "prefect-deployments.png")
    # The search also matches flow names, so `training` matches every deployment of the flow
    # `training`: the generic deployment is opened from its own page instead.
    page.goto(f"http://127.0.0.1:{trained_stack.prefect_port}/deployments/deployment/{generic}")
    page.get_by_text("training", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
    page.get_by_role("button", name="Run").first.wait_for(timeout=UI_TIMEOUT_MS)


def test_mlflow_ui_shows_the_registered_model_with_its_champion_alias(trained_stack: Stack, page: Any) -> None:
    page.goto(f"{trained_stack.mlflow_url}/#/models/{MODEL}")
    version = page.get_by_role("row").filter(has_text="Version 1")
    version.first.wait_for(timeout=UI_TIMEOUT_MS)
    screenshot(page, "mlflow-model.png")
    assert version.first.get_by_text("@ champion").count() == 1
    assert "conveyor.decision" in version.first.inner_text()
