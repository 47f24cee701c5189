"""The closed loop on the real stack: data lands, training starts by itself; drift raises an
event that starts training; late labels show up as real performance in the report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.harness import Stack, wait_until
from tests.factories import classification_frame, write_csv, write_spec

STACK = "loop"  # the shared stack this module runs on (tests/e2e/conftest.py)
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

MODEL = "loop"
# What a watch run finds in data no version was trained on: it announces it, or finds it already
# announced when the watch deployment's own schedule (every ten minutes) got there first.
NEW = {"arrived", "announced"}


def stack_project(root: Path) -> None:
    """The looping model's spec: a glob over daily files, retraining on new data and drift."""
    write_spec(
        root,
        MODEL,
        "../data/loop/*.csv",
        monitoring={"retrain_on": ["new_data", "drift"], "cooldown_minutes": 0},
        contract={"range_tolerance": 0.5},
        schedule={"cron": None},  # trained by its data and its drift only
    )


@pytest.fixture(scope="module")
def stack(running_stack: Stack) -> Stack:
    """The module's shared stack, with the first day of data landed."""
    write_csv(running_stack.root, "data/loop/2026-11-01.csv", classification_frame(rows=600, seed=0))
    return running_stack


def training_runs(stack: Stack) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with stack.prefect() as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"model:{MODEL}"])))
    return sorted((run for run in runs if run.name.startswith("train-")), key=lambda r: r.created)


def wait_for_training(stack: Stack, count: int, timeout: float = 300) -> list[Any]:
    """Wait until `count` training runs of the model exist and all are final."""

    def done() -> list[Any] | None:
        runs = training_runs(stack)
        return runs if len(runs) >= count and all(run.state and run.state.is_final() for run in runs) else None

    try:
        return wait_until(done, timeout, f"{count} final training runs of {MODEL}")
    except AssertionError as exc:
        states = [(run.name, run.state_name, run.parameters) for run in training_runs(stack)]
        raise AssertionError(f"{exc}; have {states}\n{stack.tail()}") from None


def run_and_wait(stack: Stack, deployment: str, parameters: dict[str, Any]) -> Any:
    run = stack.run_deployment(deployment, parameters)
    (final,) = stack.wait_final([run.id], timeout=600)
    assert final.state.is_completed(), f"{final.state.name}: {final.state.message}\n{stack.tail()}"
    return final


def watch(stack: Stack) -> str:
    """Run the watch flow for this module's model; what it found (`arrived`, `announced`, `trained`)."""
    run = run_and_wait(stack, "watch/watch", {"specs": [MODEL]})
    pattern = re.compile(rf"^{MODEL}: (\w+)$", re.MULTILINE)
    found = wait_until(lambda: pattern.search(stack.run_logs(run.id)), 60, f"the watch run's line for {MODEL}")
    return found.group(1)


def versions(stack: Stack) -> list[str]:
    return sorted(v.version for v in stack.mlflow().search_model_versions(f"name='{MODEL}'"))


def test_the_loop_runs_by_itself(stack: Stack) -> None:
    # Data lands: the watch flow announces it and the deployment trigger starts training.
    assert watch(stack) in NEW
    first = wait_for_training(stack, 1)
    assert first[0].parameters["trigger"] == "conveyor.data.arrived"
    assert first[0].state.is_completed(), first[0].state.message
    assert versions(stack) == ["1"]

    # The same files again start nothing: the watch finds them trained and announces nothing.
    assert watch(stack) == "trained"
    assert len(training_runs(stack)) == 1

    # A new file matching the glob: a second version, through every gate. Duplicate triggers
    # happen: the data digest is the event's identity, so a second look at the same new data
    # announces nothing more, and one training run and one new version come of it.
    write_csv(stack.root, "data/loop/2026-11-02.csv", classification_frame(rows=600, seed=7))
    assert watch(stack) in NEW
    assert watch(stack) in {"announced", "trained"}  # announced once, or already trained on
    second = wait_for_training(stack, 2)
    assert [run.parameters["trigger"] for run in second] == ["conveyor.data.arrived"] * 2
    assert second[-1].state.is_completed(), second[-1].state.message
    assert versions(stack) == ["1", "2"]
    champion = stack.mlflow().get_model_version_by_alias(MODEL, "champion")
    decision = stack.mlflow().get_model_version(MODEL, "2").tags["conveyor.decision"]
    assert decision in {"promoted", "kept"}
    assert champion.version == ("2" if decision == "promoted" else "1")

    # A drifted batch is scored and monitored: the drift event starts a training run.
    batch = classification_frame(rows=1500, seed=11)
    batch["x1"] = (batch["x1"] * 0.5 + 1.2).round(4)
    batch["colour"] = np.where(np.arange(len(batch)) % 10 < 8, "red", batch["colour"])
    batch["row_id"] = batch["row_id"] + 500_000
    incoming = write_csv(stack.root, "incoming/batch.csv", batch.drop(columns=["label"]))
    run_and_wait(
        stack,
        "scoring/scoring",
        {"model": MODEL, "input_path": str(incoming), "output_path": str(stack.root / "scored.parquet")},
    )
    labels = write_csv(stack.root, "incoming/labels.csv", batch[["row_id", "label"]].iloc[:1000])
    run_and_wait(stack, "feedback/feedback", {"model": MODEL, "labels_path": str(labels)})
    monitored = run_and_wait(stack, "monitoring/monitoring", {"model": MODEL, "since_hours": None})
    # The labels show the model doing worse on the shifted rows, so both events fire: drift
    # (in this spec's retrain_on) trains, degraded performance (not in it) is declined.
    triggered = {run.parameters["trigger"]: run for run in wait_for_training(stack, 4)[2:]}
    assert set(triggered) == {"conveyor.drift.detected", "conveyor.performance.degraded"}
    for run in triggered.values():
        assert run.state.is_completed(), run.state.message
    # A run's last log lines reach the API after its final state: wait for them.
    declined_id, retrained_id = triggered["conveyor.performance.degraded"].id, triggered["conveyor.drift.detected"].id
    wait_until(lambda: "does not include 'performance'" in stack.run_logs(declined_id), 60, "the refusal in the logs")
    reused = re.compile(r"nothing to do: same data\b.* as v(ersion )?2\b")
    wait_until(lambda: reused.search(stack.run_logs(retrained_id)), 60, "the reuse of v2 in the logs")
    # Same data as version 2: the drift-triggered run is idempotent, not a refit.
    assert versions(stack) == ["1", "2"]

    # The monitoring run in MLflow carries the drift and the real performance figures.
    client = stack.mlflow()
    experiment = client.get_experiment_by_name(MODEL)
    (report_run,) = client.search_runs([experiment.experiment_id], filter_string="tags.`conveyor.kind` = 'monitoring'")
    assert report_run.data.tags["conveyor.prefect_flow_run_id"] == str(monitored.id)
    assert report_run.data.metrics["drifted_features"] >= 2
    assert report_run.data.metrics["labelled_rows"] == 1000
    assert 0.5 < report_run.data.metrics["live_roc_auc"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(report_run.info.run_id, "monitoring")}
    assert "monitoring/report.html" in artifacts
