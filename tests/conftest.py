"""Session fixtures shared by every tier: one Prefect harness, a throwaway MLflow store per test,
one trained `churn` project that modules copy, and the PostgreSQL server the PostgreSQL-profile
tests use when one answers."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before Prefect is imported anywhere: no telemetry offline, a patient temporary server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parent.parent

POSTGRES_ENV = "CONVEYOR_TEST_POSTGRES_URL"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432"
NO_POSTGRES = (
    f"no PostgreSQL: {POSTGRES_ENV} is unset and nothing answered on {LOCAL_POSTGRES} within 1 s; "
    f"start a local server (apt-get install postgresql, user postgres trusted on 127.0.0.1) "
    f"or export {POSTGRES_ENV}=postgresql://user@host:port"
)


def local_postgres() -> str | None:
    """The local server's URL when one accepts `postgres` on 127.0.0.1:5432 within a second."""
    try:
        import psycopg

        with psycopg.connect(LOCAL_POSTGRES, connect_timeout=1):
            return LOCAL_POSTGRES
    except Exception:  # not installed, refused, timed out, or a password is asked
        return None


def pytest_configure(config: pytest.Config) -> None:
    # Before test modules are imported, so that every module reading the variable sees it.
    if not os.environ.get(POSTGRES_ENV) and (url := local_postgres()):
        os.environ[POSTGRES_ENV] = url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server for the tests that need one (skipped, saying how to get one, without)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(NO_POSTGRES)
    return url


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole session (starting one costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    from conveyor.orchestration import no_heartbeats

    # No heartbeats, as under a command's own server: each would add up to 1 s to every flow run.
    with prefect_test_harness(server_startup_timeout=300), no_heartbeats():  # a loaded 2-core machine needs > 120 s
        yield


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 1 MB (a tmpfs mounted for the test; skipped where mounting needs root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder with its own .conveyor stores, used as CONVEYOR_HOME."""
    (tmp_path / "pipelines").mkdir()
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CONVEYOR_ARTIFACT_ROOT", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def churn_template(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """`churn` on the default 400 rows trained once for the session (v1, champion), and what the run
    returned. Never changed: a module copies it (`tests/factories.py:copy_project`) and works on the copy."""
    from flows.training import training_flow
    from tests.factories import classification_frame, project_home, write_csv, write_spec

    with project_home(tmp_path_factory.mktemp("churn")) as root:
        write_csv(root, "data/train.csv", classification_frame())
        return root, training_flow(spec=str(write_spec(root, "churn", "../data/train.csv")))


# A depth-1 tree: a champion that a default model beats on the same data.
WEAK_MODEL = {"estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 1}}


@pytest.fixture(scope="session")
def weak_churn_template(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`churn` on 600 rows trained once for the session with WEAK_MODEL (v1, champion); modules copy it."""
    from tests.factories import trained_project

    return trained_project(tmp_path_factory.mktemp("weak"), rows=600, model=WEAK_MODEL)


# pytest-xdist (`make test`). The e2e modules on a shared stack (tests/e2e/conftest.py) name it in a
# `STACK = "<name>"` line; each stack's modules go to one worker as one unit, so each stack starts
# once, not once per worker (about half a minute each here). The stacks' units go out first (the
# longest), then every other module whole, and the real-data corpus one table per unit last, so
# its short tests fill the workers' ends.
SHARED_STACK_UNIT = "tests/e2e: the modules on stack"
_STACK_LINE = re.compile(r'^STACK = "([\w-]+)"', re.MULTILINE)


@functools.cache
def shared_stack(path: str) -> str | None:
    """The shared e2e stack the module at `path` (relative to the repository) runs on, if any."""
    file = REPO / path
    if not (path.startswith("tests/e2e/") and file.is_file()):
        return None
    found = _STACK_LINE.search(file.read_text())
    return found.group(1) if found else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Stable: the shared stacks' modules first, everything else in collection order.
    items.sort(key=lambda item: shared_stack(item.nodeid.split("::", 1)[0]) is None)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadfile":
        return None  # xdist's own scheduler for any other --dist
    from xdist.scheduler import LoadFileScheduling

    class SharedStackScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            if stack := shared_stack(path):
                return f"{SHARED_STACK_UNIT} {stack}"
            return nodeid if path.startswith("tests/realdata/") else path

    config.option.loadscopereorder = False  # keep the order above, not the most tests first
    return SharedStackScheduling(config, log)
