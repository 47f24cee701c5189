"""Two processes promoting one model at once on a PostgreSQL tracking store: the advisory lock
serialises them, the better candidate ends as champion, both attempts are audited."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import registry
from conveyor.decision import Decision
from conveyor.spec import parse_spec

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROMOTE = """
import json, sys, time
from pathlib import Path
from conveyor import locks, registry
from conveyor.decision import Decision
from conveyor.spec import parse_spec
import tasks.registry as promotion

version, go, scores = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
spec = parse_spec({"name": "race", "data": {"path": "x.csv", "target": "y"}, "task": "binary"}, "/tmp/race.yaml")
candidate = promotion.Registered(version, registry.get_version("race", version).run_id, "")
assert locks.backend() == "postgres"
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
decision = promotion.apply_promotion(
    spec, candidate, Decision("promoted", "beats v1"), "1", scores[version], lambda v: scores[v], True
)
print(decision.outcome, flush=True)
"""


@pytest.fixture
def postgres_store(postgres_url: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    import psycopg

    name = f"conveyor_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{postgres_url}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    uri = f"{postgres_url.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        yield uri
    finally:
        with psycopg.connect(f"{postgres_url}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _versions(count: int) -> list[str]:
    """`count` real versions of `race`: one logged sklearn model, registered from `count` runs."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(50, 2))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    run_id = registry.start_run("race", run_name="logged", tags={})
    packaged = registry.package_model(run_id, model, X[:5], model.predict_proba(X[:5]), ["scikit-learn"])
    registry.end_run(run_id)
    versions = []
    for _ in range(count):
        run = registry.start_run("race", run_name="candidate", tags={})
        tags = {"conveyor.artifact_digest": packaged.artifact_digest}
        versions.append(
            str(registry.register_version("race", packaged.model_uri, run, tags, packaged.model_id).version)
        )
        registry.end_run(run)
    return versions


def test_two_processes_racing_leave_the_better_champion(postgres_store: str, project: Path) -> None:
    import tasks.registry as promotion

    first, better, worse = _versions(3)
    spec = parse_spec({"name": "race", "data": {"path": "x.csv", "target": "y"}, "task": "binary"}, "/tmp/race.yaml")
    promotion.apply_promotion(
        spec,
        promotion.Registered(first, "", ""),
        Decision("promoted", "first"),
        None,
        {"roc_auc": 0.8},
        lambda v: None,
        True,
    )
    scores = {first: {"roc_auc": 0.80}, better: {"roc_auc": 0.95}, worse: {"roc_auc": 0.90}}
    go = project / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTE, version, str(go), json.dumps(scores)], stdout=subprocess.PIPE, text=True
        )
        for version in (worse, better)
    ]
    for racer in racers:
        assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
    go.touch()
    outcomes = {}
    for version, racer in zip((worse, better), racers, strict=True):
        out, _ = racer.communicate(timeout=300)
        assert racer.returncode == 0
        outcomes[version] = out.strip()

    assert str(registry.alias_version("race", registry.CHAMPION).version) == better
    assert outcomes[better] == "promoted"
    audited = {(entry["version"], entry["outcome"]) for entry in registry.audit_trail("race")}
    assert audited == {(first, "promoted"), (better, "promoted"), (worse, outcomes[worse])}
