"""The bad-input corpus through the real training flow and the real CLI, after a good champion.

For every case: one message naming the file, the column and the problem; a DataError (exit 3 from
the CLI, one line, no traceback); no new model version; the champion alias unmoved; the MLflow
run, when one was started, FAILED with the validation report attached; the Prefect flow run
Failed with the same reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor import registry
from conveyor.errors import DataError
from tests.corpus import CASES, MODEL, Case, good_frame, spec_document, write_spec_file

pytestmark = pytest.mark.usefixtures("prefect_harness")

CONVEYOR = str(Path(sys.executable).parent / "conveyor")


@dataclass(frozen=True)
class Project:
    root: Path
    spec: Path
    contract: Path


@pytest.fixture(scope="module")
def trained(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A project whose model has a champion (v1) and a contract drafted by that first run."""
    from flows.training import training_flow

    root = tmp_path_factory.mktemp("bad-input")
    good_frame().to_csv(root / "data.csv", index=False)
    spec = write_spec_file(root / "pipelines", MODEL, spec_document(MODEL, "../data.csv"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVEYOR_HOME", str(root))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("CONVEYOR_ARTIFACT_ROOT", raising=False)
        result = training_flow(spec=str(spec))
        assert result["outcome"] == "promoted" and result["version"] == "1"
        contract = root / "pipelines" / f"{MODEL}.expectations.json"
        assert contract.is_file()  # the first run drafted it
        yield Project(root, spec, contract)


def _spec_for(case: Case, project: Project, data: Path) -> Path:
    """The model's spec, or a sibling spec (same model name) with the case's data options."""
    document = spec_document(case.model, str(data), **case.data_options)
    return write_spec_file(project.root / "pipelines", f"bad_{case.id}", document)


def _runs(model: str) -> list:
    experiment = registry.client().get_experiment_by_name(model)
    if experiment is None:
        return []
    return registry.client().search_runs([experiment.experiment_id], order_by=["start_time DESC"])


def _versions(model: str) -> list[str]:
    return [str(v.version) for v in registry.list_versions(model)]


def _assert_message(case: Case, message: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    assert case.file in message, message
    if case.column:
        assert f"column {case.column!r}" in message, message
    assert re.search(case.problem, message), message


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_and_changes_nothing(case: Case, trained: Project) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from flows.training import training_flow

    data = case.write(trained.root / "incoming" / case.id)
    spec = _spec_for(case, trained, data)
    runs_before = {run.info.run_id for run in _runs(case.model)}
    contract_before = trained.contract.read_text()

    state = training_flow(spec=str(spec), return_state=True)

    assert state.is_failed()
    with pytest.raises(DataError) as caught:
        state.result()
    message = str(caught.value)
    _assert_message(case, message)
    # The registry is untouched: no version, the champion where it was.
    assert _versions(MODEL) == ["1"]
    assert str(registry.alias_version(MODEL, registry.CHAMPION).version) == "1"
    if case.model != MODEL:
        assert _versions(case.model) == []
    # The contract is not rewritten by bad data (and none is kept when drafted from it).
    assert trained.contract.read_text() == contract_before
    assert not (trained.root / "pipelines" / f"{case.model}.expectations.json").exists() or (case.model == MODEL)
    # The Prefect flow run is Failed, with the same reason.
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
    assert flow_run.state is not None and flow_run.state.type == StateType.FAILED
    assert message in (flow_run.state.message or ""), flow_run.state.message
    # MLflow: a run exists only once the data was read; it ended FAILED with the report.
    new_runs = [run for run in _runs(case.model) if run.info.run_id not in runs_before]
    if case.stage == "load":
        assert new_runs == []
        return
    (run,) = new_runs
    assert run.info.status == "FAILED"
    assert run.data.tags["conveyor.error"] == message
    report = json.loads(registry.artifact_text(run.info.run_id, "validation/report.json"))
    assert report["success"] is False and report["message"] == message
    assert report["failures"][0]["on_violation"] == "fail"
    assert report["contract"]["suite"]["expectations"]


def test_a_good_batch_still_trains_after_the_refusals(trained: Project) -> None:
    """The refusals left nothing behind that blocks the next good run."""
    from flows.training import training_flow

    more = good_frame(rows=500, seed=7)
    path = trained.root / "incoming" / "good.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    more.to_csv(path, index=False)
    result = training_flow(spec=str(trained.spec), data_path=str(path), allow_promotion=False)
    assert result["outcome"] == "kept" and result["version"] == "2"
    assert str(registry.alias_version(MODEL, registry.CHAMPION).version) == "1"
    report = json.loads(registry.artifact_text(result["run_id"], "validation/report.json"))
    assert report["success"] is True and report["contract"]["drafted"] is False


def _cli(project: Path, *args: str, api_url: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "MLFLOW_", "CONVEYOR_"))}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(project / ".prefect"),
        PREFECT_API_URL=api_url,
        OMP_NUM_THREADS="1",
    )
    return subprocess.run([CONVEYOR, *args], cwd=project, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_cli_refuses_every_case_with_one_line_and_exit_3(trained: Project) -> None:
    """`conveyor train` over one spec per case: one `error:` line each, exit 3, nothing changed."""
    from prefect.settings import PREFECT_API_URL

    specs = []
    for case in CASES:
        data = case.write(trained.root / "cli" / case.id)
        specs.append(str(_spec_for(case, trained, data).relative_to(trained.root)))
    versions_before = _versions(MODEL)

    result = _cli(trained.root, "train", *specs, api_url=str(PREFECT_API_URL.value()))

    assert result.returncode == DataError.exit_code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(CASES), result.stderr
    for case, line in zip(CASES, lines, strict=True):
        assert line.startswith("error: "), line
        _assert_message(case, line.removeprefix("error: "))
    assert _versions(MODEL) == versions_before
    assert str(registry.alias_version(MODEL, registry.CHAMPION).version) == "1"
    assert _versions("leaky") == []
