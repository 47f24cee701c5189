"""The closed loop clicked through the two UIs as a user would, in Debian's chromium (Playwright).

Train with Quick run, then score, feed back labels and monitor from the deployments' Custom run
forms (the model picked from the list, paths relative to the project root), and follow the
monitoring artifact's "Full report" link into MLflow. The Prefect API is used only to find the
runs the clicks created and to wait for their final states; screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.e2e import browser
from tests.e2e.browser import NEEDS_CHROMIUM, chromium_page, close_toasts
from tests.e2e.harness import ON_DEMAND, Stack, wait_until
from tests.factories import classification_frame, write_csv, write_spec

MODEL = "browser_loop"
UI_TIMEOUT_MS = 90_000
RUN_TIMEOUT_S = 600
BATCH = f"data/{MODEL}-batch.csv"
LABELS = f"data/{MODEL}-labels.csv"
SCORED = "out/scored.csv"

STACK = "ui"  # the shared stack this module runs on (tests/e2e/conftest.py)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(1800),
    NEEDS_CHROMIUM,
]


def stack_project(root: Path) -> None:
    """The model clicked through the loop: training rows, a batch to score (no target) and its labels."""
    frame = classification_frame(rows=500, seed=4)
    train, batch = frame.iloc[:400], frame.iloc[400:].copy()
    for column in ("x1", "x2"):  # inside the training range, so the serving contract accepts every row
        batch[column] = batch[column].clip(train[column].min(), train[column].max())
    write_csv(root, f"data/{MODEL}.csv", train)
    write_csv(root, BATCH, batch.drop(columns=["label"]))
    write_csv(root, LABELS, batch[["row_id", "label"]])
    write_spec(root, MODEL, f"../data/{MODEL}.csv", **ON_DEMAND)


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with chromium_page(UI_TIMEOUT_MS) as opened:
        yield opened


def screenshot(page: Any, name: str) -> None:
    browser.screenshot(page, f"loop-{name}.png")


def deployment_id(stack: Stack, name: str) -> str:
    with stack.prefect() as client:
        return str(client.read_deployment_by_name(name).id)


def run_ids(stack: Stack, deployment: str) -> set[str]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with stack.prefect() as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment])))
    return {str(run.id) for run in runs}


def started_by_click(stack: Stack, deployment: str, before: set[str]) -> str:
    """The one flow run of the deployment that did not exist before the click."""
    new = wait_until(lambda: run_ids(stack, deployment) - before, 60, f"a flow run of deployment {deployment}")
    assert len(new) == 1, new
    return new.pop()


def completed(stack: Stack, run_id: str) -> Any:
    (final,) = stack.wait_final([run_id], timeout=RUN_TIMEOUT_S)
    assert final.state.is_completed(), f"{final.name}: {final.state.name}: {final.state.message}\n{stack.tail()}"
    return final


def open_run_menu(page: Any, stack: Stack, deployment: str) -> None:
    page.goto(f"http://127.0.0.1:{stack.prefect_port}/deployments/deployment/{deployment}")
    page.get_by_role("button", name="Run", exact=True).click()


def choose(page: Any, field: str, value: str) -> None:
    """Pick `value` from the choice list of the form's `field` (a select, never free text)."""
    from playwright.sync_api import Error, expect

    prop = page.locator(".schema-form-property").filter(has=page.get_by_text(field, exact=True)).first
    button = prop.locator(".p-select-button__control")
    listbox = page.get_by_role("listbox")
    for _ in range(3):  # the select sometimes takes a click only as focus; then the keyboard opens it
        if not listbox.is_visible():
            button.click()
        if not listbox.is_visible():
            button.press("ArrowDown")
        try:
            listbox.wait_for(timeout=10_000)
            option = listbox.get_by_text(value, exact=True)
            assert option.count() == 1, listbox.inner_text()
            option.click()
            expect(prop.locator(".p-select-button__value")).to_have_text(value, timeout=10_000)
            return
        except (Error, AssertionError) as exc:
            failure = exc
    raise AssertionError(f"could not choose {value!r} for {field}: {failure}")


def fill(page: Any, field: str, value: str) -> None:
    prop = page.locator(".schema-form-property").filter(has=page.get_by_text(field, exact=True)).first
    prop.locator("textarea, input[type=text]").first.fill(value)


def submit(page: Any, stack: Stack, deployment: str, before: set[str]) -> str:
    """Click the form's Submit, as a person would again after an error; the new run's id.

    Seen on a loaded machine: the click was taken, Prefect's server failed the request (its
    SQLite database locked by other writers), and the UI showed "Oops. Something went wrong."
    with no run made; the toast then covered the Submit button. A person closes the toast and
    clicks again. A click is repeated only while the form is still shown and no run exists.
    """
    form = re.compile(rf"/deployments/deployment/{deployment}/run")
    for _ in range(3):
        close_toasts(page)  # an earlier error's toast, or one not faded yet
        page.get_by_role("button", name="Submit").click()
        try:
            wait_until(
                lambda: run_ids(stack, deployment) - before or not form.search(urlparse(page.url).path),
                30,
                "the form submitted",
            )
            break
        except AssertionError:
            screenshot(page, "submit-refused")
    return started_by_click(stack, deployment, before)


def custom_run(page: Any, stack: Stack, name: str, model: str, paths: dict[str, str], shot: str) -> Any:
    """Run -> Custom run on deployment `name`: the model from the list, the paths typed; Submit."""
    deployment = deployment_id(stack, name)
    before = run_ids(stack, deployment)
    open_run_menu(page, stack, deployment)
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_url(re.compile(rf"/deployments/deployment/{deployment}/run"))
    choose(page, "model", model)
    for field, value in paths.items():
        fill(page, field, value)
    screenshot(page, f"{shot}-form")
    final = completed(stack, submit(page, stack, deployment, before))
    page.goto(f"http://127.0.0.1:{stack.prefect_port}/runs/flow-run/{final.id}")
    page.get_by_text("Completed", exact=True).first.wait_for()
    screenshot(page, f"{shot}-run")
    return final


def test_the_loop_clicked_through_both_uis(running_stack: Stack, page: Any) -> None:
    from playwright.sync_api import expect

    stack = running_stack

    # a. Quick run of train-<model>: no dialog, no form, a run starts; its state message says the outcome.
    train = deployment_id(stack, f"training/train-{MODEL}")
    before = run_ids(stack, train)
    open_run_menu(page, stack, train)
    screenshot(page, "1-run-menu")
    page.get_by_text("Quick run", exact=True).click()
    page.get_by_text("scheduled to start now").first.wait_for()
    assert page.get_by_role("dialog").count() == 0
    close_toasts(page)  # its X lies under the toast's countdown ring; closed at once, not faded
    expect(page.get_by_text("scheduled to start now")).to_have_count(0, timeout=1_500)
    assert urlparse(page.url).path == f"/deployments/deployment/{train}", page.url  # no form opened
    trained = completed(stack, started_by_click(stack, train, before))
    assert "promoted" in trained.state.message, trained.state.message
    page.goto(f"http://127.0.0.1:{stack.prefect_port}/runs/flow-run/{trained.id}")
    page.get_by_text("Details", exact=True).click()
    message = page.get_by_text("State Message", exact=True).locator("xpath=..")
    message.wait_for()
    assert f"{MODEL} v1 promoted" in message.inner_text(), message.inner_text()
    screenshot(page, "2-trained")

    # b. Scoring from its form: model chosen from the list, paths relative to the project root.
    scored = custom_run(
        page, stack, "scoring/scoring", MODEL, {"input_path": BATCH, "output_path": SCORED}, "3-scoring"
    )
    assert (stack.root / SCORED).is_file(), scored.state.message

    # c. Late labels, then monitoring.
    custom_run(page, stack, "feedback/feedback", MODEL, {"labels_path": LABELS}, "4-feedback")
    monitored = custom_run(page, stack, "monitoring/monitoring", MODEL, {}, "5-monitoring")

    # d. The monitoring run's artifact links its full report into the MLflow UI, which shows it.
    page.goto(f"http://127.0.0.1:{stack.prefect_port}/runs/flow-run/{monitored.id}")
    page.get_by_text("Artifacts", exact=True).click()
    # The tab lists the run's artifacts as cards; the card opens the rendered markdown.
    page.get_by_role("link", name=re.compile(f"monitoring-{MODEL.replace('_', '-')}")).first.click()
    page.get_by_text("Full report").first.wait_for()
    link = page.get_by_role("link", name=re.compile(r"report\.html in MLflow run"))
    link.wait_for()
    screenshot(page, "6-monitoring-artifact")
    href = link.get_attribute("href")
    assert href.startswith(f"{stack.mlflow_url}/#/experiments/"), href
    assert href.endswith("/artifacts/monitoring/report.html"), href
    page.goto(href)
    page.get_by_text("report.html").first.wait_for()
    # The artifact viewer shows the HTML report in an iframe: its text is the report's.
    report = page.frame_locator("iframe").first.get_by_text(re.compile(MODEL)).first
    report.wait_for()
    screenshot(page, "7-mlflow-report")
