"""Load only what Conveyor wrote: a logged model's files hashed and checked against the digest
recorded at registration, then deserialised from those same bytes with skops and a fixed
allowlist of types (never pickle, never the trusted-types list the model carries itself).

Writing is the other half: `write_model_folder` lays out the MLflow model folder (the layout
`mlflow.sklearn.save_model` writes) from one skops dump, so its digest is taken before upload."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from conveyor.errors import RegistryError

# Packages whose types a model may hold; more through CONVEYOR_ESTIMATOR_PACKAGES (comma
# separated, e.g. "xgboost,lightgbm"). Conveyor's own transformers live in tasks.training.
BASE_PACKAGES = ("sklearn", "numpy", "scipy")
OWN_MODULES = ("tasks.training",)
# Registration adds this file; everything the model was logged with counts.
_ADDED_BY_REGISTRATION = "registered_model_meta"


def allowed_packages() -> tuple[str, ...]:
    extra = os.environ.get("CONVEYOR_ESTIMATOR_PACKAGES", "")
    return BASE_PACKAGES + tuple(name.strip() for name in extra.split(",") if name.strip())


def type_allowed(qualified_name: str) -> bool:
    """Whether a type (`module.Class`) may be deserialised: from an allowed package or our own code."""
    module = qualified_name.rpartition(".")[0]
    if module in OWN_MODULES:
        return True
    return module.split(".")[0] in allowed_packages()


def disallowed_types(types: list[str]) -> list[str]:
    return [name for name in types if not type_allowed(name)]


# skops's untrusted-type list of a dump, per schema signature (see `trusted_types`).
_TRUSTED: dict[frozenset[tuple[str, ...]], list[str]] = {}
SKOPS_FILE = "model.skops"
# Nodes whose string content is a value (JSON scalars, arrays), never a type's or function's name.
_VALUE_NODES = ("JsonNode", "NdArrayNode")


def skops_dump(model: Any) -> tuple[bytes, list[str]]:
    """The model as skops bytes and the types skops will want trusted to load them.

    skops.io.dumps with the schema written compact (its indented JSON takes the slow pure-Python
    encoder); the same format, read by skops.io.load. skops's full type audit runs once per
    distinct schema signature: a thousand models of one pipeline shape share one."""
    import skops
    import skops.io
    from skops.io._utils import SaveContext, get_state

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        context = SaveContext(zip_file=archive)
        state = get_state(model, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = skops.__version__
        archive.writestr("schema.json", json.dumps(state))
    data = buffer.getvalue()
    key = _schema_signature(state)
    if key not in _TRUSTED:
        _TRUSTED[key] = skops.io.get_untrusted_types(data=data)
    return data, list(_TRUSTED[key])


def _schema_signature(schema: dict[str, Any]) -> frozenset[tuple[str, ...]]:
    """Every node of a skops schema as (loader, module, class, its names): what skops's type audit
    reads, without values, arrays and object ids (one fitted structure, one signature)."""
    found: set[tuple[str, ...]] = set()
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                loader, content = str(item["__loader__"]), item.get("content")
                names: tuple[str, ...] = ()
                if loader not in _VALUE_NODES:  # a function's or a type's name is a string in its content
                    if isinstance(content, dict):
                        strings = (f"{k}={v}" for k, v in content.items() if isinstance(v, str) and k != "file")
                        names = tuple(sorted(strings))
                    elif isinstance(content, str):
                        names = (content,)
                found.add((loader, str(item.get("__module__")), str(item.get("__class__")), *names))
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):  # a tuple node's content is a tuple before it is JSON
            stack.extend(item)
    return frozenset(found)


@lru_cache(maxsize=8)
def _environment_files(requirements: tuple[str, ...]) -> dict[str, str]:
    """requirements.txt, conda.yaml and python_env.yaml as MLflow writes them for pinned pip requirements."""
    from mlflow.utils.environment import _process_pip_requirements, _PythonEnv

    conda_env, pip_requirements, constraints = _process_pip_requirements(None, list(requirements), None)
    if constraints:
        raise RegistryError("pip requirements with constraints (-c) are not supported")
    with tempfile.TemporaryDirectory() as folder:
        _PythonEnv.current().to_yaml(os.path.join(folder, "python_env.yaml"))
        python_env = Path(folder, "python_env.yaml").read_text()
    return {
        "requirements.txt": "\n".join(pip_requirements),
        "conda.yaml": yaml.safe_dump(conda_env, default_flow_style=False),
        "python_env.yaml": python_env,
    }


def write_model_folder(
    folder: Path,
    model_bytes: bytes,
    trusted: list[str],
    mlflow_model: Any,
    input_example: Any,
    signature: Any,
    requirements: tuple[str, ...],
) -> str:
    """Write an MLflow sklearn model (skops format, with the python_function flavor) into `folder`
    from an existing skops dump, and return the digest of what was written."""
    import sklearn
    from mlflow import pyfunc
    from mlflow.models.utils import _save_example

    folder.mkdir(parents=True)
    (folder / SKOPS_FILE).write_bytes(model_bytes)
    _save_example(mlflow_model, input_example, str(folder))
    mlflow_model.signature = signature
    pyfunc.add_to_model(
        mlflow_model,
        loader_module="mlflow.sklearn",
        model_path=SKOPS_FILE,
        conda_env="conda.yaml",
        python_env="python_env.yaml",
        code=None,
        predict_fn="predict",
    )
    mlflow_model.add_flavor(
        "sklearn",
        pickled_model=SKOPS_FILE,
        sklearn_version=sklearn.__version__,
        serialization_format="skops",
        code=None,
        skops_trusted_types=trusted,
    )
    for name, text in _environment_files(requirements).items():
        (folder / name).write_text(text)
    mlflow_model.model_size_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    mlflow_model.save(str(folder / "MLmodel"))
    return files_digest(folder)


def files_digest(folder: Path) -> str:
    """sha256 over a logged model's files: relative path then bytes, in path order."""
    digest = hashlib.sha256()
    files = (p for p in folder.rglob("*") if p.is_file() and p.name != _ADDED_BY_REGISTRATION)
    for file in sorted(files):
        digest.update(file.relative_to(folder).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def download(model_uri: str, into: str) -> Path:
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=into))


def artifact_digest(model_uri: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        return files_digest(download(model_uri, folder))


def load_checked(model_uri: str, expected_digest: str | None, what: str) -> Any:
    """The sklearn model at `model_uri`, if its files hash to `expected_digest` and it holds only
    allowed types; RegistryError (exit 4) otherwise."""
    import skops.io

    if not expected_digest:
        raise RegistryError(f"{what}: no artifact digest recorded (not registered by Conveyor), refusing to load")
    with tempfile.TemporaryDirectory() as folder:
        local = download(model_uri, folder)
        if files_digest(local) != expected_digest:
            raise RegistryError(f"{what}: artifacts changed since registration, refusing to load")
        flavor = (yaml.safe_load((local / "MLmodel").read_text()) or {}).get("flavors", {}).get("sklearn", {})
        if flavor.get("serialization_format") != "skops":
            raise RegistryError(f"{what}: not saved with skops, refusing to load")
        path = local / str(flavor.get("pickled_model", "model.skops"))
        try:
            found = skops.io.get_untrusted_types(file=path)
        except Exception as exc:
            raise RegistryError(f"{what}: the model file is not a readable skops file ({type(exc).__name__})") from None
        refused = disallowed_types(found)
        if refused:
            raise RegistryError(f"{what}: the model holds types outside the allowed packages: {', '.join(refused)}")
        try:
            return skops.io.load(path, trusted=found)
        except Exception as exc:
            raise RegistryError(f"{what}: the model file does not load ({type(exc).__name__}: {exc})") from None
