"""Approvals on the running stack: a medium-risk training run pauses in Prefect (its model slot
released) until a person answers, from `conveyor approve` or from the form in the Prefect UI
(Debian's chromium); then the champion moves."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import browser
from tests.e2e.browser import NEEDS_CHROMIUM, chromium_page
from tests.e2e.harness import CONVEYOR, ON_DEMAND, Stack, wait_until
from tests.factories import classification_frame, write_csv, write_spec

CLI_MODEL = "approve-cli"
UI_MODEL = "approve-ui"
GOVERNANCE = {"risk_tier": "medium", "approvers": ["ana", "bo"]}
UI_TIMEOUT_MS = 90_000

STACK = "ui"  # the shared stack this module runs on (tests/e2e/conftest.py)
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]


def stack_project(root: Path) -> None:
    """Two medium-risk models that train only when this module asks."""
    for seed, name in enumerate((CLI_MODEL, UI_MODEL)):
        write_csv(root, f"data/{name}.csv", classification_frame(rows=300, seed=20 + seed))
        write_spec(root, name, f"../data/{name}.csv", governance=GOVERNANCE, **ON_DEMAND)


def conveyor(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "PREFECT_API_URL": stack.api_url, "MLFLOW_TRACKING_URI": stack.mlflow_url}
    return subprocess.run([CONVEYOR, *args], cwd=stack.root, env=env, capture_output=True, text=True, timeout=600)


def paused_run(stack: Stack, model: str) -> Any:
    """Run the model's training deployment (it ends `pending`) and wait until the approval run it
    started pauses for people."""
    (trained,) = stack.wait_final([stack.run_deployment("training/training", {"spec": model}).id])
    assert trained.state.is_completed() and "pending" in (trained.state.message or ""), trained.state.message
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with stack.prefect() as client:

        def paused() -> Any:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"approval:{model}:v1"])), limit=1
            )
            assert not runs or not runs[0].state.is_final(), f"{runs[0].state}\n{stack.tail()}"
            return runs[0] if runs and runs[0].state.is_paused() else None

        return wait_until(paused, 600, f"approval run of {model} paused", every=0.5)


def form_field(dialog: Any, label: str, index: int) -> Any:
    """A text field of the resume form, by its label (or its place: the decision is a select)."""
    labelled = dialog.get_by_label(label)
    return labelled.first if labelled.count() else dialog.locator("input[type=text], textarea").nth(index)


def champion(stack: Stack, model: str) -> str | None:
    try:
        return str(stack.mlflow().get_model_version_by_alias(model, "champion").version)
    except Exception:  # no champion yet
        return None


def test_a_paused_training_run_is_answered_by_conveyor_approve(running_stack: Stack) -> None:
    run = paused_run(running_stack, CLI_MODEL)
    assert champion(running_stack, CLI_MODEL) is None
    stranger = conveyor(running_stack, "approve", CLI_MODEL, "1", "--as", "mallory")
    assert stranger.returncode != 0
    assert stranger.stderr.strip().splitlines() == [
        f"error: 'mallory' is not an approver of {CLI_MODEL} (governance.approvers: ana, bo)"
    ]
    done = conveyor(running_stack, "approve", CLI_MODEL, "1", "--as", "ana", "--comment", "looks good")
    assert done.returncode == 0, done.stderr
    assert f"answered flow run {run.id}" in done.stdout
    (final,) = running_stack.wait_final([run.id], timeout=300)
    assert final.state.is_completed(), final.state.message
    assert f"{CLI_MODEL} v1 promoted" in (final.state.message or "")
    assert champion(running_stack, CLI_MODEL) == "1"
    history = conveyor(running_stack, "history", CLI_MODEL)
    assert history.returncode == 0, history.stderr
    outcomes = [line.split()[4] for line in history.stdout.strip().splitlines()[1:]]
    assert outcomes == ["promoted", "approved", "pending"]


@NEEDS_CHROMIUM
@pytest.mark.browser
def test_the_approval_form_in_the_prefect_ui_promotes(running_stack: Stack) -> None:
    from playwright.sync_api import expect

    run = paused_run(running_stack, UI_MODEL)
    with chromium_page(UI_TIMEOUT_MS) as page:
        page.goto(f"http://127.0.0.1:{running_stack.prefect_port}/runs/flow-run/{run.id}")
        page.get_by_role("button", name="Resume").first.click()
        dialog = page.locator("[role=dialog], .p-modal").filter(has_text="Resume Flow Run").last
        dialog.get_by_text(f"Approve {UI_MODEL} v1 as champion?").wait_for()
        assert "candidate v1" in dialog.inner_text()  # the metrics side by side
        approver, comment = form_field(dialog, "Approver", 0), form_field(dialog, "Comment", 1)
        approver.fill("bo")
        comment.fill("checked the card")
        expect(approver).to_have_value("bo")
        expect(comment).to_have_value("checked the card")
        browser.screenshot(page, "approval-form.png")  # docs/approval-form.png is a copy of it
        # Prefect's server on SQLite can fail the request under load ("Oops. Something went
        # wrong." and the run still paused, as seen with a deployment's form): a person closes
        # the toast and submits again; a form that was taken closes.
        for _ in range(3):
            browser.close_toasts(page)
            dialog.get_by_role("button", name="Submit").click()
            try:
                expect(dialog).to_be_hidden(timeout=30_000)
                break
            except AssertionError:
                browser.screenshot(page, "approval-form-after-submit.png")
        else:
            raise AssertionError(f"the form stayed open after Submit:\n{dialog.inner_text()}")
        (final,) = running_stack.wait_final([run.id], timeout=300)
        assert final.state.is_completed(), f"{final.state.name}: {final.state.message}\n{running_stack.tail()}"
        assert champion(running_stack, UI_MODEL) == "1"
        page.goto(f"{running_stack.mlflow_url}/#/models/{UI_MODEL}")
        page.get_by_role("row").filter(has_text="Version 1").filter(has_text="champion").first.wait_for()
        browser.screenshot(page, "approval-champion.png")
    trail = conveyor(running_stack, "history", UI_MODEL).stdout
    assert "bo" in trail and "checked the card" in trail
