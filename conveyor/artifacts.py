"""Load only what Conveyor wrote: a logged model's files hashed and checked against the digest
recorded at registration, then deserialised from those same bytes with skops and a fixed
allowlist of types (never pickle, never the trusted-types list the model carries itself)."""

from __future__ import annotations

import hashlib
import os
import tempfile
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
