"""The embedded SQLite MLflow store: readers go on while another process holds a write open."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from conveyor import registry, settings


def test_a_reader_of_the_embedded_store_does_not_wait_for_an_open_write(project: Path) -> None:
    registry.client().create_registered_model("churn", description="as committed")
    path = settings.tracking_uri().removeprefix("sqlite:///")

    # Another process's write, begun and not yet committed: in SQLite's default journal mode this
    # locks every reader out (MLflow would wait its 20 s busy timeout, then fail).
    with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as writer:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("UPDATE registered_models SET description = 'half-written' WHERE name = 'churn'")
        seen = registry.client().get_registered_model("churn").description
        writer.execute("COMMIT")

    assert seen == "as committed"  # the committed state, not the write in flight
    assert registry.client().get_registered_model("churn").description == "half-written"


def test_runs_go_to_the_experiment_of_that_name_after_it_was_deleted_for_good(project: Path) -> None:
    import subprocess
    import sys

    first = registry.start_run("sales", run_name="first", tags={})
    registry.end_run(first)
    old_id = registry.experiment_of(first)
    mlflow = registry.client()
    registry.ensure_experiment("other")  # so the name's next experiment gets a new id
    mlflow.delete_experiment(old_id)
    uri = settings.tracking_uri()
    subprocess.run(  # what `mlflow gc` does to a deleted experiment: gone from the store
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri, "--experiment-ids", old_id],
        check=True,
        capture_output=True,
    )

    second = registry.start_run("sales", run_name="second", tags={})

    experiment = mlflow.get_experiment_by_name("sales")
    assert experiment is not None and experiment.experiment_id != old_id
    assert registry.experiment_of(second) == experiment.experiment_id
    assert mlflow.get_run(second).info.experiment_id == experiment.experiment_id
