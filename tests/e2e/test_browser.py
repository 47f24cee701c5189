"""The two UIs in a real browser (Debian's chromium driven by Playwright), on a running stack.

Screenshots land in tests/artifacts/ (git-ignored) for the CI run to keep.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_stack import MODEL, Stack, start_stack, stop_stack

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 90_000

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def trained_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A SQLite stack on which the training deployment ran once, as a click on Run would."""
    stack = start_stack(tmp_path_factory.mktemp("browser"))
    try:
        run = stack.run_deployment("training/training", {"spec": MODEL})
        (final,) = stack.wait_final([run.id])
        assert final.state.is_completed(), f"{final.state.message}\n{stack.tail()}"
        yield stack
    finally:
        stop_stack(stack)


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_prefect_ui_lists_the_training_deployments(trained_stack: Stack, page: Any) -> None:
    with trained_stack.prefect() as client:
        ids = {
            name: client.read_deployment_by_name(f"training/{name}").id
            for name in ("training", f"train-{MODEL}")
        }
    page.goto(f"http://127.0.0.1:{trained_stack.prefect_port}/deployments")
    ours = page.get_by_role("row").filter(has_text=f"train-{MODEL}")
    ours.first.wait_for(timeout=UI_TIMEOUT_MS)
    screenshot(page, "prefect-deployments.png")
    assert "At 02:00 AM every day" in ours.first.inner_text()  # the spec's default schedule
    for name, deployment_id in ids.items():
        link = page.locator(f'a[href="/deployments/deployment/{deployment_id}"]')
        assert link.count() == 1 and link.inner_text().strip() == name


def test_mlflow_ui_shows_the_registered_model_with_its_champion_alias(
    trained_stack: Stack, page: Any
) -> None:
    page.goto(f"{trained_stack.mlflow_url}/#/models/{MODEL}")
    version = page.get_by_role("row").filter(has_text="Version 1")
    version.first.wait_for(timeout=UI_TIMEOUT_MS)
    screenshot(page, "mlflow-model.png")
    assert version.first.get_by_text("@ champion").count() == 1
    assert "conveyor.decision" in version.first.inner_text()
