"""A process that registered `exit_quickly` closes its MLflow stores, then freezes its heap, at exit."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

SCRIPT = """
import atexit, gc, os, sys
# Registered first, so it runs last: what the process looks like after every other exit handler.
atexit.register(lambda: print("frozen", gc.get_freeze_count() > 0, "log", os.path.exists(sys.argv[1] + "-wal")))
from conveyor.process_exit import exit_quickly
if sys.argv[2] == "quick":
    exit_quickly()
from mlflow import MlflowClient
from conveyor.registry import write_ahead_log
uri = "sqlite:///" + sys.argv[1]
write_ahead_log(uri)
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
client.create_registered_model("kept")
client.create_experiment("written")
"""


def _exit(tmp_path: Path, mode: str) -> tuple[str, Path]:
    store = tmp_path / mode / "mlflow.db"
    store.parent.mkdir()
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(store), mode], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    return done.stdout.strip().splitlines()[-1], store


def test_the_stores_are_closed_before_the_heap_is_frozen(tmp_path: Path) -> None:
    last, store = _exit(tmp_path, "quick")
    # The write-ahead log was folded back by the connections' close, before the interpreter's teardown.
    assert last == "frozen True log False"
    assert not store.with_name("mlflow.db-wal").exists()
    with closing(sqlite3.connect(store)) as db:
        assert db.execute("SELECT name FROM experiments WHERE name = 'written'").fetchall() == [("written",)]
        assert db.execute("SELECT name FROM registered_models").fetchall() == [("kept",)]


def test_without_it_the_log_is_still_open_at_the_last_handler(tmp_path: Path) -> None:
    """The case the first test guards: MLflow's engines stay open until the teardown collects them."""
    last, _ = _exit(tmp_path, "plain")
    assert last == "frozen False log True"
