"""`conveyor serve` as a user runs it: a real server process on a real MLflow store, real HTTP requests.

One server process for the module, on a copy of the session's trained `churn` (v1, champion),
v2 registered from the same logged model (a second training would cost a minute and prove nothing
more here: the server tells versions apart by the registry, not by their weights).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml

from tests.e2e.harness import CONVEYOR, clean_env, free_port, wait_until
from tests.factories import classification_frame, copy_project, project_home

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = "churn"
FEATURES = ["row_id", "x1", "x2", "colour"]


@dataclass
class Served:
    root: Path
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def post(self, body: Any = None, path: str = f"/models/{MODEL}/invocations", **kwargs: Any) -> httpx.Response:
        return (
            httpx.post(self.url + path, json=body, timeout=60, **kwargs)
            if body is not None
            else httpx.post(self.url + path, timeout=60, **kwargs)
        )

    def models(self) -> dict[str, Any]:
        return {row["name"]: row for row in httpx.get(self.url + "/models", timeout=30).json()["models"]}


def register_copy(version: str) -> str:
    """A new version of churn from the logged model of `version` (same files, same digest)."""
    from conveyor import registry

    source = registry.get_version(MODEL, version)
    keep = {k: v for k, v in source.tags.items() if k in ("conveyor.artifact_digest", "conveyor.task")}
    created = registry.client().create_model_version(
        MODEL, source.source, run_id=source.run_id, tags=keep, model_id=getattr(source, "model_id", None)
    )
    return str(created.version)


def move_champion(version: str, outcome: str) -> float:
    """Move `champion` as Conveyor does (an audit entry, then the alias); returns when it moved."""
    from conveyor import registry

    registry.record_audit(MODEL, {"version": version, "outcome": outcome, "champion_after": version, "actor": "test"})
    registry.client().set_registered_model_alias(MODEL, registry.CHAMPION, version)
    return time.monotonic()


@pytest.fixture(scope="module")
def served(churn_template: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = copy_project(churn_template[0], tmp_path_factory.mktemp("serving") / "project")
    with project_home(root):
        from conveyor import registry

        registry.set_alias(MODEL, registry.CHALLENGER, register_copy("1"))
    port = free_port()
    env = clean_env() | {
        "CONVEYOR_HOME": str(root),
        "CONVEYOR_SERVE_LOG_SECONDS": "0.5",
        "OMP_NUM_THREADS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    log = root / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [CONVEYOR, "serve", "--port", str(port), "--poll-seconds", "0.5", "--max-body-mb", "1"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Served(root, f"http://127.0.0.1:{port}", process, log, env)

    def ready() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(server.url + "/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 900, "the server to be ready", every=0.5)  # a loaded machine: minutes
        with project_home(root):
            yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rows(count: int = 1, start: int = 0, first_id: int = 0) -> pd.DataFrame:
    """`count` of the training rows (within the contract by construction), with ids of their own."""
    frame = classification_frame().drop(columns="label").iloc[start : start + count].reset_index(drop=True)
    frame["row_id"] = np.arange(first_id, first_id + count)
    return frame


def split(frame: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}


def test_binds_only_this_machine_by_default(served: Served) -> None:
    listening = [c for c in psutil.Process(served.process.pid).net_connections("tcp") if c.status == "LISTEN"]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}


def test_every_format_gets_the_champions_answer(served: Served) -> None:
    from conveyor import registry

    frame = rows(5)
    model = registry.load_model(MODEL, "1")
    expected = model.predict_proba(frame[["x1", "x2", "colour"]])
    records = frame.to_dict(orient="records")
    bodies = {
        "dataframe_split": split(frame),
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {name: frame[name].tolist() for name in frame.columns}},
    }
    for kind, body in bodies.items():
        answer = served.post(body)
        assert answer.status_code == 200, (kind, answer.text)
        assert answer.headers["X-Conveyor-Model-Version"] == "1"
        document = answer.json()
        assert document["version"] == "1"
        yes = [row["yes"] for row in document["probabilities"]]
        np.testing.assert_allclose(yes, expected[:, list(model.classes_).index("yes")], rtol=1e-9)
        assert document["predictions"] == list(model.classes_[expected.argmax(axis=1)])
    csv = served.post(content=frame.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert csv.status_code == 200, csv.text
    assert csv.json()["predictions"] == document["predictions"]
    tensors = {"inputs": [{"name": n, "shape": [5], "datatype": "BYTES", "data": frame[n].tolist()} for n in FEATURES]}
    v2 = served.post(tensors, path=f"/v2/models/{MODEL}/infer")
    assert v2.status_code == 200, v2.text
    outputs = {tensor["name"]: tensor["data"] for tensor in v2.json()["outputs"]}
    assert outputs["prediction"] == document["predictions"]


@pytest.mark.parametrize(
    ("change", "column", "problem"),
    [
        (lambda f: f.drop(columns="x2"), "x2", "missing"),
        (lambda f: f.assign(extra=1.0), "extra", "unexpected column"),
        (lambda f: f.rename(columns={"x1": "x_one"}), "x1", "renamed"),
        (lambda f: f.assign(x1="abc"), "x1", "expected a number"),
        (lambda f: f.assign(colour=3), "colour", "expected text"),
        (lambda f: f.assign(row_id="r-1"), "row_id", "expected a number"),
        (lambda f: f.assign(x1=1e6), "x1", "outside [-"),
        (lambda f: f.assign(colour="purple"), "colour", "not in the contract's categories"),
        (lambda f: f.assign(x2=None), "x2", "missing value"),
    ],
    ids=["missing", "extra", "renamed", "wrong-type", "number-for-text", "id-type", "range", "category", "null"],
)
def test_the_serving_contract_refuses_with_one_error_naming_the_column(
    served: Served, change: Any, column: str, problem: str
) -> None:
    frame = change(rows(3))
    body = {
        "dataframe_records": [{k: (None if v is None else v) for k, v in r.items()} for r in frame.to_dict("records")]
    }
    answer = served.post(body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["column"] == column
    assert problem in error["message"]


def test_size_unknown_model_and_malformed_json_are_refused(served: Served) -> None:
    big = split(rows(1))
    big["dataframe_split"]["data"] *= 40_000  # about 1.3 MB, over the 1 MB this server allows
    assert served.post(big).status_code == 413
    unknown = served.post(split(rows(1)), path="/models/nope/invocations")
    assert unknown.status_code == 404 and "nope" in unknown.json()["message"]
    malformed = served.post(content=b'{"dataframe_split": {', headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["message"]


BROKEN = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"[1, 2, 3]",
    b'"text"',
    b"\xff\xfe\x00garbage",
    b"[" * 5000 + b"]" * 5000,
    b'{"dataframe_split": null}',
    b'{"dataframe_split": {"columns": ["x1"], "data": [[1, 2]]}}',
    b'{"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}}',
    b'{"dataframe_split": {"columns": ["x1", "x1"], "data": [[1, 2]]}}',
    b'{"dataframe_split": {"columns": ["row_id","x1","x2","colour"], "data": []}}',
    b'{"dataframe_split": {"columns": ["row_id","x1","x2","colour"], "data": [null]}}',
    b'{"dataframe_records": [1, 2]}',
    b'{"dataframe_records": {"a": 1}}',
    b'{"dataframe_records": [{"row_id": 1, "x1": {"a": 1}, "x2": 0, "colour": "red"}]}',
    b'{"dataframe_records": [{"row_id": [1], "x1": 0, "x2": 0, "colour": "red"}]}',
    b'{"dataframe_records": [{"row_id": 1, "x1": NaN, "x2": 0, "colour": "red"}]}',
    b'{"dataframe_records": [{"row_id": 1, "x1": 1e999, "x2": 0, "colour": "red"}]}',
    b'{"dataframe_records": [{"row_id": 1, "x1": true, "x2": 0, "colour": "red"}]}',
    b'{"dataframe_records": [{"row_id": 1, "x1": 0, "x2": 0, "colour": "' + b"r" * 100_000 + b'"}]}',
    b'{"instances": [[1, 0.1, 0.2, "red"]]}',
    b'{"inputs": {"row_id": [1, 2], "x1": [0.1], "x2": [0, 0], "colour": ["red", "red"]}}',
    b'{"inputs": [{"name": "x1"}]}',
    b'{"instances": [], "inputs": []}',
    b'{"dataframe_records": [{"\\u0000": 1}]}',
]


def test_a_corpus_of_broken_bodies_is_refused_and_the_server_keeps_answering(served: Served) -> None:
    for body in BROKEN:
        answer = served.post(content=body, headers={"Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, (body[:80], answer.status_code, answer.text)
        assert answer.json()["message"], body[:80]
    csv_cases = [b"row_id,x1\n1", b'row_id,x1,x2,colour\n1,"unterminated', b"row_id,x1,x2,colour\n", b"\x00\x01\x02"]
    for body in csv_cases:
        answer = served.post(content=body, headers={"Content-Type": "text/csv"})
        assert 400 <= answer.status_code < 500, (body, answer.text)
    assert served.post(content=b"x", headers={"Content-Type": "application/xml"}).status_code == 415
    assert served.process.poll() is None
    good = served.post(split(rows(2)))
    assert good.status_code == 200 and len(good.json()["predictions"]) == 2


class Load:
    """Requests from several threads until stopped: every status, version and moment recorded."""

    def __init__(self, served: Served, threads: int = 4) -> None:
        self.served = served
        self.results: list[tuple[float, int, str]] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        self.body = split(rows(1))

    def run(self) -> None:
        with httpx.Client(base_url=self.served.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    answer = client.post(f"/models/{MODEL}/invocations", json=self.body)
                    self.results.append(
                        (time.monotonic(), answer.status_code, answer.headers.get("X-Conveyor-Model-Version", ""))
                    )
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def first_answer_by(self, version: str, after: float) -> float | None:
        return next((at for at, status, by in list(self.results) if at >= after and by == version), None)


def test_promotion_and_rollback_switch_the_serving_version_under_load_without_a_failed_request(served: Served) -> None:
    with Load(served) as load:
        wait_until(lambda: len(load.results) > 20, 60, "requests to flow")
        for version, outcome in (("2", "promoted"), ("1", "rolled-back")):
            moved = move_champion(version, outcome)
            wait_until(lambda v=version, m=moved: load.first_answer_by(v, m), 60, f"v{version} to answer")
            switched = load.first_answer_by(version, moved)
            assert switched is not None and switched - moved < 10
            wait_until(lambda v=version: served.models()[MODEL]["serving_version"] == v, 30, "the switch to show")
            after = time.monotonic()
            wait_until(lambda a=after: sum(at > a for at, *_ in list(load.results)) > 20, 60, "more requests")
            assert {by for at, _, by in list(load.results) if at > after} == {version}
    statuses = Counter(status for _, status, _ in load.results)
    assert not load.failures and set(statuses) == {200}, (load.failures[:3], statuses)
    assert {by for *_, by in load.results} == {"1", "2"}
    assert served.process.poll() is None  # no restart


def test_online_rows_reach_the_prediction_log_and_feedback_joins_their_labels(served: Served) -> None:
    from typer.testing import CliRunner

    from app.cli import app
    from conveyor import predictions

    frame = rows(20, start=100, first_id=50_000)
    assert served.post(split(frame)).status_code == 200
    assert httpx.post(served.url + "/flush", timeout=60).status_code == 200
    logged = predictions.read(MODEL)
    online = logged[logged["row_id"] >= 50_000]
    assert sorted(online["row_id"]) == list(range(50_000, 50_020))
    assert set(online["route"]) == {"champion"} and not online["shadow"].any()
    assert {"x1", "x2", "colour", "prediction", "proba_yes", "model_version", "scored_at"} <= set(online.columns)
    labels = served.root / "labels.csv"
    pd.DataFrame({"row_id": frame["row_id"], "label": ["yes"] * 20}).to_csv(labels, index=False)
    result = CliRunner().invoke(app, ["feedback", MODEL, "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    assert "20 match logged predictions" in result.output
    joined = predictions.joined(MODEL)
    assert (joined.loc[joined["row_id"] >= 50_000, "label"] == "yes").all()


def test_canary_and_shadow_shares_over_2000_requests(served: Served) -> None:
    spec_path = served.root / "pipelines" / f"{MODEL}.yaml"
    original = spec_path.read_text()
    spec = yaml.safe_load(original)
    spec["serving"] = {"canary": 0.1, "shadow": True}
    move_champion("1", "promoted")
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        wait_until(lambda: served.models()[MODEL].get("challenger") == "2", 60, "the challenger to load")
        body = split(rows(1, first_id=70_000))

        # One client for the 8 threads: a client per request builds an SSL context each time
        # (about 20 ms here), which was most of this test's time.
        with httpx.Client(base_url=served.url, timeout=60) as http, ThreadPoolExecutor(8) as pool:

            def one(_: int) -> str:
                answer = http.post(f"/models/{MODEL}/invocations", json=body)
                assert answer.status_code == 200, answer.text
                return answer.headers["X-Conveyor-Route"]

            routes = Counter(pool.map(one, range(2000)))
        assert abs(routes["canary"] / 2000 - 0.1) < 0.03, routes  # 0.1 +- 4.5 standard deviations
        from conveyor import predictions

        def logged() -> Counter[str] | None:
            httpx.post(served.url + "/flush", timeout=60)
            log = predictions.read(MODEL)
            counts = Counter(log.loc[log["row_id"] == 70_000, "route"])
            return counts if counts["shadow"] == routes["champion"] else None

        counts = wait_until(logged, 60, "every shadow score to be logged")
        assert counts["canary"] == routes["canary"] and counts["champion"] == routes["champion"]
        log = predictions.read(MODEL)
        shadows = log[(log["row_id"] == 70_000) & (log["route"] == "shadow")]
        assert shadows["shadow"].all() and set(shadows["model_version"]) == {"2"}
    finally:
        spec_path.write_text(original)


def test_metrics_count_requests_and_errors_per_model_and_version(served: Served) -> None:
    text = httpx.get(served.url + "/metrics", timeout=30).text
    assert 'conveyor_serving_requests_total{model="churn",route="champion",version="1"}' in text
    assert 'conveyor_serving_errors_total{model="churn",status="400"}' in text
    assert "conveyor_serving_request_seconds_bucket" in text
