"""The one adapter between Conveyor and MLflow: runs, model packaging, versions, aliases, audit."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import artifacts, settings
from conveyor.errors import RegistryError, UnreachableError

CHAMPION = "champion"
CHALLENGER = "challenger"
AUDIT_EXPERIMENT = "conveyor-audit"
TAG_PREFIX = "conveyor."
# Tag (on a segment model and its versions): the spec a segment model belongs to. A segment
# model's promotions are serialised under its spec's lock (see `lock_subject`).
SEGMENT_OF = "conveyor.segment_of"


_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def model_name(name: str) -> str:
    """`name` if it can be a model's name (a spec's name); else one line, before it reaches a
    search filter where a quote would break the query."""
    if not _MODEL_NAME.match(name):
        raise RegistryError(f"{name!r} is not a model name (letters, digits, '_', '.', '-')")
    return name


def client() -> Any:
    """An MlflowClient on the configured store; the fluent API is pointed at the same store."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    prepare_store(uri)
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


_WAL_DONE: set[str] = set()


def prepare_store(uri: str) -> None:
    """Before MLflow first opens a SQLite store: a store that does not exist yet starts as a copy of
    the empty one made at install (`conveyor.mlflow_database`), then runs in write-ahead-log mode."""
    from conveyor import mlflow_database

    if uri.startswith("sqlite:///") and uri not in _WAL_DONE:  # once per store and process
        mlflow_database.seed(uri)
    write_ahead_log(uri)


def write_ahead_log(uri: str) -> None:
    """Put an embedded SQLite store in write-ahead-log mode, once per store and process (the mode
    is kept in the file, so every process on it, an `mlflow server` too, uses it).

    In SQLite's default mode a commit locks readers out and syncs twice; MLflow makes about 40
    commits per registered segment model, and threads or Dask workers writing at once wait on each
    other's locks in SQLite's busy-sleep steps. In WAL mode readers never wait for a writer and a
    commit appends to one log; it is as safe against a killed process. A store that cannot switch
    (locked, read-only) stays as it is: slower, never wrong."""
    import sqlite3

    if not uri.startswith("sqlite:///") or uri in _WAL_DONE:
        return
    path = uri.removeprefix("sqlite:///")
    if path in ("", ":memory:"):
        return
    _WAL_DONE.add(uri)
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def _writes() -> Any:
    """MLflow's registry client for tag, alias and description writes. `MlflowClient` first reads
    the whole registered model before each of these, to refuse a prompt (about 16 ms a write at a
    few versions, growing with them); a Conveyor model name is never a prompt's."""
    return client()._get_registry_client()


def check_reachable(timeout: float = 3.0) -> None:
    """Fail in seconds, not minutes, when the tracking server or database does not answer
    (MLflow itself retries an unreachable server for about 4.5 minutes)."""
    uri = settings.tracking_uri()
    if uri.startswith(("http://", "https://")):
        import httpx

        try:
            httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout)
        except httpx.HTTPError as exc:
            raise UnreachableError(
                f"the MLflow tracking server {settings.masked(uri)} does not answer ({type(exc).__name__}); "
                "start it (make up) or point MLFLOW_TRACKING_URI at a running one"
            ) from None
    elif uri.startswith("postgresql"):
        import psycopg

        dsn = uri.replace("postgresql+psycopg2://", "postgresql://").replace("postgresql+psycopg://", "postgresql://")
        try:
            psycopg.connect(dsn, connect_timeout=max(1, int(timeout))).close()
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnreachableError(f"the tracking database {settings.masked(uri)} does not answer: {first}") from None


def ensure_experiment(name: str) -> str:
    """The experiment's id, creating it with an artifact location under the project if needed."""
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if not settings.tracking_uri().startswith(("http://", "https://")):
        # A local store would otherwise put artifacts in ./mlruns of whatever folder we run from.
        location = str(Path(settings.artifact_root()) / name)
    try:
        return str(mlflow_client.create_experiment(name, artifact_location=location))
    except Exception:  # created concurrently by another run
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


# (tracking URI, experiment name) -> id, and run id -> experiment id, for the runs this process
# started: a fleet opens a run per model, and each lookup is a read of the store.
_EXPERIMENT_IDS: dict[tuple[str, str], str] = {}
_RUN_EXPERIMENTS: dict[str, str] = {}


def _create_run(experiment: str, **kwargs: Any) -> Any:
    """A new run in the named experiment (created when missing). The experiment's id is kept per
    process; when it no longer takes runs (deleted meanwhile), it is looked up again once."""
    key = (settings.tracking_uri(), experiment)
    cached = _EXPERIMENT_IDS.get(key)
    if cached is not None:
        try:
            return client().create_run(cached, **kwargs)
        except Exception:  # e.g. the experiment was deleted: look it up as the first time
            _EXPERIMENT_IDS.pop(key, None)
    experiment_id = ensure_experiment(experiment)
    run = client().create_run(experiment_id, **kwargs)
    _EXPERIMENT_IDS[key] = experiment_id
    return run


def start_run(experiment: str, run_name: str, tags: dict[str, str]) -> str:
    run = _create_run(experiment, run_name=run_name, tags=tags)
    _RUN_EXPERIMENTS[run.info.run_id] = run.info.experiment_id
    return str(run.info.run_id)


def experiment_of(run_id: str) -> str:
    """The experiment id of a run (no read for a run this process started)."""
    if (known := _RUN_EXPERIMENTS.get(run_id)) is not None:
        return known
    return str(client().get_run(run_id).info.experiment_id)


def end_run(run_id: str, failed: bool = False) -> None:
    client().set_terminated(run_id, status="FAILED" if failed else "FINISHED")
    _RUN_EXPERIMENTS.pop(run_id, None)


def delete_run(run_id: str) -> None:
    client().delete_run(run_id)


def reopen_run(run_id: str) -> None:
    """Mark a run RUNNING again: a rerun finishes the job of a run that was interrupted."""
    client().update_run(run_id, status="RUNNING")


def rename_run(run_id: str, name: str, note: str | None = None) -> None:
    """Rename a run once its outcome is known; the note is Markdown in the run's description."""
    tags = {"mlflow.runName": name}
    if note is not None:
        tags["mlflow.note.content"] = note
    set_tags(run_id, tags)


def training_runs(name: str, status: str | None = None, limit: int = 50) -> list[Any]:
    """The model's training runs, newest first, optionally only those in `status` (e.g. RUNNING)."""
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        return []
    query = "tags.`conveyor.kind` = 'training'"
    if status:
        query += f" and attributes.status = '{status}'"
    return list(
        mlflow_client.search_runs(
            [experiment.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=limit
        )
    )


def running_training(name: str) -> str:
    """Who trains `name` right now, in words (for a run that waits for the model's slot)."""
    runs = training_runs(name, status="RUNNING", limit=1)
    if not runs:
        return "another run (no training run of this model is RUNNING in MLflow)"
    run = runs[0]
    flow = run.data.tags.get("conveyor.prefect_flow_run_id") or "?"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000))
    return f"MLflow run {run.info.run_id} (Prefect flow run {flow}), started {started}"


def close_interrupted_runs(name: str, keep: str | None = None) -> list[str]:
    """End FAILED every training run of `name` still RUNNING but `keep`.

    Called while holding the model's training slot: no other training run of this model can be
    alive, so a RUNNING one was killed (SIGKILL, a lost worker) before it could end itself."""
    closed = []
    for run in training_runs(name, status="RUNNING"):
        if run.info.run_id == keep:
            continue
        set_tags(run.info.run_id, {"conveyor.error": "interrupted: ended by the next training run of this model"})
        end_run(run.info.run_id, failed=True)
        closed.append(str(run.info.run_id))
    return closed


def log_params(run_id: str, params: dict[str, Any]) -> None:
    log_batch(run_id, params=params)


def log_metrics(run_id: str, metrics: dict[str, float], prefix: str = "") -> None:
    log_batch(run_id, metrics={f"{prefix}{key}": value for key, value in metrics.items()})


def log_batch(run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None) -> None:
    """Params and metrics of a run in one write (one store transaction, not one each)."""
    import time

    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    flat = [Param(key, str(value)[:6000]) for key, value in (params or {}).items()]
    batch = [Metric(key, float(value), now, 0) for key, value in (metrics or {}).items()]
    if flat or batch:
        client().log_batch(run_id, params=flat, metrics=batch)


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client().log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    client().log_text(run_id, text, artifact_file)


def log_dict(run_id: str, data: Any, artifact_file: str) -> None:
    client().log_dict(run_id, data, artifact_file)


def log_bytes(run_id: str, files: dict[str, bytes], artifact_path: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            Path(folder, name).write_bytes(content)
        client().log_artifacts(run_id, folder, artifact_path)


def log_dataset_input(run_id: str, frame: Any, name: str, digest: str, source: str, target: str) -> None:
    """Record the training data as an MLflow dataset input (schema, digest and source, not rows)."""
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag

    dataset = from_pandas(frame.head(0), source=source, targets=target, name=name, digest=digest[:36])
    entity = dataset._to_mlflow_entity()
    client().log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])])


def artifact_bytes(run_id: str, path: str) -> bytes:
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=folder)
        return Path(local).read_bytes()


def artifact_text(run_id: str, path: str) -> str:
    import mlflow.artifacts

    return str(mlflow.artifacts.load_text(f"runs:/{run_id}/{path}"))


@dataclass(frozen=True)
class PackagedModel:
    model_uri: str
    model_id: str
    artifact_digest: str


def package_model(
    run_id: str,
    model: Any,
    input_example: Any,
    output_example: Any,
    pip_requirements: list[str],
    extra_files: dict[str, str | bytes] | None = None,
) -> PackagedModel:
    """Log the sklearn pipeline as an MLflow model (skops, signature, example, pinned requirements)
    and `extra_files` as run artifacts, each folder uploaded once. One skops dump; its types
    checked against the allowlist and the digest taken from the local folder before upload."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    mlflow_client = client()
    model_bytes, trusted = artifacts.skops_dump(model)
    refused = artifacts.disallowed_types(trusted)
    if refused:
        raise RegistryError(f"the fitted model holds types outside the allowed packages: {', '.join(refused)}")
    signature = infer_signature(input_example, output_example)
    logged = mlflow_client.create_logged_model(experiment_of(run_id), name="model", source_run_id=run_id)
    try:
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder, "model")
            mlflow_model = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run_id,
                model_id=logged.model_id,
            )
            digest = artifacts.write_model_folder(
                local, model_bytes, trusted, mlflow_model, input_example, signature, tuple(pip_requirements)
            )
            mlflow_client.log_model_artifacts(logged.model_id, str(local))
            mlflow_client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
            if extra_files:
                run_files = Path(folder, "run")
                for name, content in extra_files.items():
                    target = run_files / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content if isinstance(content, bytes) else content.encode())
                mlflow_client.log_artifacts(run_id, str(run_files))
    except BaseException:
        mlflow_client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    mlflow_client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return PackagedModel(f"models:/{logged.model_id}", logged.model_id, digest)


def model_artifact_digest(model_uri: str) -> str:
    """sha256 over the logged model's files, recorded at registration and checked before loading."""
    return artifacts.artifact_digest(model_uri)


def find_version_by_tag(name: str, key: str, value: str) -> Any | None:
    versions = client().search_model_versions(f"name='{model_name(name)}' and tags.`{key}`='{value}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def register_version(
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    model_id: str | None = None,
    model_tags: dict[str, str] | None = None,
    new_run: bool = False,
) -> Any:
    """A version for this run's model; retried idempotently (an existing one is found by its run).
    `model_tags` go on the registered model when this call creates it. `new_run`: the caller
    started this run moments ago, so no version of it can exist yet (one registry read fewer)."""
    mlflow_client = client()
    with contextlib.suppress(Exception):  # already exists, possibly created concurrently
        mlflow_client.create_registered_model(name, tags={"conveyor.managed": "true", **(model_tags or {})})
    for attempt in range(3):
        if not (new_run and attempt == 0):
            existing = mlflow_client.search_model_versions(f"name='{model_name(name)}' and run_id='{run_id}'")
            if existing:
                return existing[0]
        try:
            # A tracking server wants the logged model's id beside a `models:/m-...` source.
            return mlflow_client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
        except Exception:
            # Concurrent creates can collide on the version number (mlflow PR #22635): look again.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def discard_undecided(name: str, version: str) -> bool:
    """Delete a version whose run failed before its promotion began: no intent written, no alias
    on it. A version past that point is left for the rerun to finish (True when deleted)."""
    with contextlib.suppress(Exception):  # the original error is what matters
        model_version = client().get_model_version(name, str(version))
        if "conveyor.intent" in model_version.tags or "conveyor.decision" in model_version.tags:
            return False
        if getattr(model_version, "aliases", None):
            return False
        client().delete_model_version(name, str(version))
        return True
    return False


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    writes = _writes()
    for key, value in tags.items():  # MLflow has no batch write for version tags
        writes.set_model_version_tag(model_name(name), str(version), key, str(value))


def delete_version_tag(name: str, version: str, key: str) -> None:
    with contextlib.suppress(Exception):  # not set
        _writes().delete_model_version_tag(model_name(name), str(version), key)


def describe_version(name: str, version: str, description: str) -> None:
    _writes().update_model_version(model_name(name), str(version), description=description)


def describe_model(name: str, description: str) -> None:
    """The registered model's description (from its spec), written when it changes."""
    mlflow_client = client()
    with contextlib.suppress(Exception):  # already exists
        mlflow_client.create_registered_model(name, tags={"conveyor.managed": "true"})
    if (mlflow_client.get_registered_model(name).description or "") != description:
        mlflow_client.update_registered_model(name, description=description)


def alias_version(name: str, alias: str) -> Any | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    _writes().set_registered_model_alias(model_name(name), alias, str(version))


def list_versions(name: str) -> list[Any]:
    versions = client().search_model_versions(f"name='{model_name(name)}'")
    return sorted(versions, key=lambda v: int(v.version))


def get_version(name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version {version}") from None


def load_model(name: str, version: str) -> Any:
    """Load a registered version: its digest required and checked on the very bytes that are
    deserialised, with skops and a fixed allowlist of types (conveyor.artifacts)."""
    model_version = get_version(name, version)
    expected = model_version.tags.get("conveyor.artifact_digest")
    return artifacts.load_checked(f"models:/{name}/{version}", expected, f"model {name} version {version}")


def record_audit(name: str, entry: dict[str, Any]) -> None:
    """One run per promotion attempt in the audit experiment, refusals included."""
    mlflow_client = client()
    tags = {f"conveyor.{key}": str(value) for key, value in entry.items()}
    tags["conveyor.model"] = name
    tags["mlflow.runName"] = f"{name}-v{entry.get('version', '?')}-{entry.get('outcome', '?')}"
    run = _create_run(AUDIT_EXPERIMENT, tags=tags)  # the tags are the record (`audit_trail` reads them)
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")


def unaudited_champion(name: str) -> str | None:
    """Why the champion alias is not where the audit trail last put it (None when it is, or when
    there is no champion): an alias moved from outside Conveyor, with no decision behind it."""
    current = alias_version(name, CHAMPION)
    if current is None:
        return None
    placed = [entry.get("champion_after") for entry in audit_trail(name, limit=200) if entry.get("champion_after")]
    if not placed:
        return f"champion v{current.version} of {name} has no audited decision behind it"
    if str(placed[0]) != str(current.version):
        return (
            f"champion v{current.version} of {name} was not put there by Conveyor: "
            f"the audit trail's last decision made v{placed[0]} champion"
        )
    return None


def audit_recorded(name: str, version: str, outcome: str) -> bool:
    """Whether the audit trail already holds this decision (a rerun finishing a job writes it once)."""
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return False
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`conveyor.model` = '{model_name(name)}' and tags.`conveyor.version` = '{version}' "
            f"and tags.`conveyor.outcome` = '{outcome}'"
        ),
        max_results=1,
    )
    return bool(runs)


def audit_trail(name: str, limit: int = 50) -> list[dict[str, Any]]:
    model_name(name)
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return []
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`conveyor.model` = '{model_name(name)}'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return [
        {key.removeprefix("conveyor."): value for key, value in run.data.tags.items() if key.startswith("conveyor.")}
        | {"time": run.info.start_time}
        for run in runs
    ]


def lock_subject(name: str) -> str:
    """Whose promotion lock guards `name`: its spec's for a segment model (the segment flow holds
    that one lock over its whole fan-out), else its own."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client().get_registered_model(model_name(name)).tags
    except MlflowException:
        return name
    if SEGMENT_OF in tags:
        return str(tags[SEGMENT_OF])
    champion = alias_version(name, CHAMPION)  # a segment model registered before the model tag
    return str(champion.tags.get(SEGMENT_OF, name)) if champion is not None else name


def promotion_lock(name: str, timeout: float = 120) -> contextlib.AbstractContextManager[str]:
    """Serialise promotions of one model where every runner sees it (see conveyor.locks). Acting on
    a model that may be a segment model, lock `lock_subject(name)`."""
    from conveyor import locks

    return locks.model_lock("promote", name, timeout, what=f"promoting {name}")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def version_profile_text(name: str, version: str) -> str:
    """The text of the reference profile stored with a version at training time
    (`tasks.drift.parse_profile` reads it)."""
    model_version = get_version(name, version)
    try:
        return artifact_text(model_version.run_id, "conveyor/profile.json")
    except Exception as exc:  # an older version or a model registered outside Conveyor
        raise RegistryError(f"model {name} version {version} has no reference profile ({exc})") from None


def model_tag(name: str, key: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client().get_registered_model(name).tags.get(key)
    except MlflowException:
        return None


def set_model_tag(name: str, key: str, value: str) -> None:
    mlflow_client = client()
    with contextlib.suppress(Exception):  # already exists
        mlflow_client.create_registered_model(name, tags={"conveyor.managed": "true"})
    mlflow_client.set_registered_model_tag(name, key, value)


def delete_model_tag(name: str, key: str) -> None:
    with contextlib.suppress(Exception):
        client().delete_registered_model_tag(name, key)


def last_training_start(name: str) -> float | None:
    """When the model's latest training run started (epoch seconds), from the tracking store."""
    runs = training_runs(name, limit=1)
    return runs[0].info.start_time / 1000 if runs else None
