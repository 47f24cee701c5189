"""Every outcome is visible without opening logs: the flow run's state message (runs list, run
header) carries the one-line reason, read back here from the Prefect API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from flows.training import training_flow
from tests.factories import copy_project, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def trained_template(churn_template: tuple[Path, dict]) -> Path:
    """The session's trained `churn` (v1, champion): each test works on a copy."""
    return churn_template[0]


@pytest.fixture
def spec(project: Path, trained_template: Path) -> Path:
    copy_project(trained_template, project)
    return project / "pipelines" / "churn.yaml"


def from_api(state: Any) -> tuple[Any, list[str], dict[str, str]]:
    """The flow run's stored state, its log lines and its artifacts (key -> description) as the UI sees them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    flow_run_id = state.state_details.flow_run_id

    async def read() -> tuple[Any, list[str], dict[str, str]]:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
            return run.state, [log.message for log in logs], {a.key: a.description for a in artifacts if a.key}

    return asyncio.run(read())


def test_an_unchanged_rerun_says_nothing_to_do(spec: Path) -> None:
    state, _, artifacts = from_api(training_flow(spec=str(spec), return_state=True))
    assert state.is_completed()
    assert state.message == "nothing to do: same data, contract, spec and code as v1 (promoted)"
    assert artifacts["training-churn"] == state.message


def test_a_run_declined_by_the_policy_says_skipped_and_why(spec: Path) -> None:
    state, _, artifacts = from_api(training_flow(spec=str(spec), trigger="conveyor.drift.detected", return_state=True))
    assert state.is_completed()
    assert state.message == (
        "skipped: conveyor.drift.detected: monitoring.retrain_on ['new_data', 'performance'] does not include 'drift'"
    )
    assert artifacts["training-churn"] == state.message


def test_a_refused_run_fails_with_its_reason_and_no_traceback(spec: Path) -> None:
    final = training_flow(spec=str(spec), data_path="data/absent.csv", return_state=True)
    deadline = time.monotonic() + 60
    while True:  # logs reach the API in batches, after the run: wait for the reason's line
        state, logs, _ = from_api(final)
        if any(line.endswith("data/absent.csv: no such file") for line in logs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert state.is_failed()
    assert state.message.endswith("data/absent.csv: no such file")
    assert any(line.endswith("data/absent.csv: no such file") for line in logs), logs
    assert not any("Traceback" in line for line in logs)


def test_a_trained_run_says_version_outcome_and_metric(spec: Path) -> None:
    write_spec(spec.parent.parent, "churn", "../data/train.csv", model={"estimator": "sklearn.dummy.DummyClassifier"})
    state, _, _ = from_api(training_flow(spec=str(spec), return_state=True))
    assert state.is_completed()
    assert state.message.startswith(
        "churn v2 kept (roc_auc 0.5): roc_auc 0.5 is not higher than the champion's roc_auc"
    )
