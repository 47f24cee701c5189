"""What a model version came from: data, spec and code, as digests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

# The code that decides what a training run registers: the core, every task (data, contracts,
# training, evaluation, packaging, profile, registry) and the training flow. Monitoring, scoring
# and the app do not change a registered model, but they live beside it and a stricter key only
# costs one refit after an upgrade, never a stale model.
_TRAINING_CODE = ("conveyor", "tasks", "flows/training.py")
# The runtime whose versions change what a fit produces or how the model loads and is profiled.
_RUNTIME = ("scikit-learn", "numpy", "scipy", "pandas", "pyarrow", "skops", "mlflow")


def _code_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for relative in _TRAINING_CODE:
        path = root / relative
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else [])
    return files


@cache
def code_digest() -> str:
    """sha256 of the training code, the Python version and the versions of the libraries the model needs."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for file in _code_files(root):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(file.read_bytes())
    major, minor = sys.version_info[:2]
    digest.update(f"python {major}.{minor}".encode())
    for requirement in pinned_requirements():
        digest.update(requirement.encode())
    return digest.hexdigest()


@cache
def git_revision() -> str:
    """The commit the code came from, with '-dirty' for uncommitted changes; 'unknown' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


@cache
def pinned_requirements() -> tuple[str, ...]:
    """Exact pins for the serving environment, read from what is installed (no pip subprocess)."""
    return tuple(f"{name}=={metadata.version(name)}" for name in _RUNTIME)


@dataclass(frozen=True)
class Lineage:
    data_digest: str
    spec_digest: str
    contract_digest: str
    code_digest: str
    code_revision: str

    @property
    def key(self) -> str:
        """Same data, spec, contract and code give the same key: the content address of a training run."""
        joined = f"{self.data_digest}:{self.spec_digest}:{self.contract_digest}:{self.code_digest}"
        return hashlib.sha256(joined.encode()).hexdigest()

    def tags(self) -> dict[str, str]:
        return {
            "conveyor.data_digest": self.data_digest,
            "conveyor.spec_digest": self.spec_digest,
            "conveyor.contract_digest": self.contract_digest,
            "conveyor.code_digest": self.code_digest,
            "conveyor.code_revision": self.code_revision,
            "conveyor.lineage_key": self.key,
        }


def lineage_of(data_digest: str, spec_digest: str, contract_digest: str) -> Lineage:
    return Lineage(data_digest, spec_digest, contract_digest, code_digest(), git_revision())
