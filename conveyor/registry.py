"""The one adapter between Conveyor and MLflow: runs, model packaging, versions, aliases, audit."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import settings
from conveyor.errors import RegistryError

CHAMPION = "champion"
CHALLENGER = "challenger"
AUDIT_EXPERIMENT = "conveyor-audit"
TAG_PREFIX = "conveyor."


def client() -> Any:
    """An MlflowClient on the configured store; the fluent API is pointed at the same store."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


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


def start_run(experiment: str, run_name: str, tags: dict[str, str]) -> str:
    experiment_id = ensure_experiment(experiment)
    run = client().create_run(experiment_id, run_name=run_name, tags=tags)
    return str(run.info.run_id)


def end_run(run_id: str, failed: bool = False) -> None:
    client().set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def log_params(run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    flat = [Param(key, str(value)[:6000]) for key, value in params.items()]
    if flat:
        client().log_batch(run_id, params=flat)


def log_metrics(run_id: str, metrics: dict[str, float], prefix: str = "") -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(f"{prefix}{key}", float(value), now, 0) for key, value in metrics.items()]
    if batch:
        client().log_batch(run_id, metrics=batch)


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
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    dataset = mlflow.data.from_pandas(frame.head(0), source=source, targets=target, name=name, digest=digest[:36])
    entity = dataset._to_mlflow_entity()
    client().log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])])


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
    extra_files: dict[str, str] | None = None,
) -> PackagedModel:
    """Log the sklearn pipeline with signature, example and pinned requirements, as skops."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    client()
    # We trust the types of a model we fitted ourselves; loading checks against this list.
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    with mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(input_example, output_example),
            input_example=input_example,
            pip_requirements=pip_requirements,
            skops_trusted_types=trusted,
        )
        for artifact_file, text in (extra_files or {}).items():
            mlflow.log_text(text, artifact_file)
    return PackagedModel(info.model_uri, info.model_id, model_artifact_digest(info.model_uri))


def model_artifact_digest(model_uri: str) -> str:
    """sha256 over the logged model's files, recorded at registration and checked before serving."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        digest = hashlib.sha256()
        # Registration adds `registered_model_meta`; everything the model was logged with counts.
        files = (p for p in local.rglob("*") if p.is_file() and p.name != "registered_model_meta")
        for file in sorted(files):
            digest.update(file.relative_to(local).as_posix().encode())
            digest.update(file.read_bytes())
        return digest.hexdigest()


def find_version_by_tag(name: str, key: str, value: str) -> Any | None:
    versions = client().search_model_versions(f"name='{name}' and tags.`{key}`='{value}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def register_version(name: str, model_uri: str, run_id: str, tags: dict[str, str], model_id: str | None = None) -> Any:
    """A version for this run's model; retried idempotently (an existing one is found by its run)."""
    mlflow_client = client()
    with contextlib.suppress(Exception):  # already exists, possibly created concurrently
        mlflow_client.create_registered_model(name, tags={"conveyor.managed": "true"})
    for attempt in range(3):
        existing = mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
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


def discard_version(name: str, version: str) -> None:
    """Delete a version whose run failed before its decision was recorded (its aliases go too)."""
    with contextlib.suppress(Exception):  # already gone; the original error is what matters
        client().delete_model_version(name, str(version))


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    mlflow_client = client()
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, str(value))


def alias_version(name: str, alias: str) -> Any | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, str(version))


def list_versions(name: str) -> list[Any]:
    versions = client().search_model_versions(f"name='{name}'")
    return sorted(versions, key=lambda v: int(v.version))


def get_version(name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version {version}") from None


def load_model(name: str, version: str) -> Any:
    """Load a registered version after checking its artifacts against the digest recorded at registration."""
    import mlflow.sklearn

    model_version = get_version(name, version)
    uri = f"models:/{name}/{version}"
    expected = model_version.tags.get("conveyor.artifact_digest")
    if expected and model_artifact_digest(uri) != expected:
        raise RegistryError(f"model {name} version {version}: artifacts changed since registration, refusing to load")
    return mlflow.sklearn.load_model(uri)


def record_audit(name: str, entry: dict[str, Any]) -> None:
    """One run per promotion attempt in the audit experiment, refusals included."""
    mlflow_client = client()
    experiment_id = ensure_experiment(AUDIT_EXPERIMENT)
    tags = {f"conveyor.{key}": str(value) for key, value in entry.items()}
    tags["conveyor.model"] = name
    tags["mlflow.runName"] = f"{name}-v{entry.get('version', '?')}-{entry.get('outcome', '?')}"
    run = mlflow_client.create_run(experiment_id, tags=tags)
    mlflow_client.log_dict(run.info.run_id, entry, "audit.json")
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")


def audit_trail(name: str, limit: int = 50) -> list[dict[str, Any]]:
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return []
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`conveyor.model` = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return [
        {key.removeprefix("conveyor."): value for key, value in run.data.tags.items() if key.startswith("conveyor.")}
        | {"time": run.info.start_time}
        for run in runs
    ]


@contextlib.contextmanager
def promotion_lock(name: str, timeout: float = 120) -> Iterator[None]:
    """Serialise promotions of one model: a PostgreSQL advisory lock when the store is PostgreSQL,
    else a file lock under .conveyor/locks (one machine)."""
    uri = settings.tracking_uri()
    if uri.startswith("postgresql"):
        import psycopg2

        key = int.from_bytes(hashlib.sha256(f"conveyor:{name}".encode()).digest()[:8], "big", signed=True)
        dsn = uri.replace("postgresql+psycopg2://", "postgresql://")
        with contextlib.closing(psycopg2.connect(dsn)) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", (key,))
                try:
                    yield
                finally:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return
    from filelock import FileLock

    folder = Path(os.environ.get("CONVEYOR_LOCK_DIR") or settings.state_dir() / "locks")
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{name}.lock"), timeout=timeout):
        yield


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def version_profile(name: str, version: str) -> dict[str, Any]:
    """The reference profile stored with a version at training time."""
    model_version = get_version(name, version)
    try:
        return dict(json.loads(artifact_text(model_version.run_id, "conveyor/profile.json")))
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
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        return None
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`conveyor.kind` = 'training'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.start_time / 1000 if runs else None
