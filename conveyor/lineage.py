"""What a model version came from: data, spec and code, as digests."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

# The modules that decide what a training run produces; a change to any other (the CLI, the
# stack, monitoring) does not make a new model.
_TRAINING_CODE = (
    "conveyor/spec.py",
    "conveyor/decision.py",
    "flows/training.py",
    "tasks/data.py",
    "tasks/contracts.py",
    "tasks/training.py",
    "tasks/evaluation.py",
)
# The libraries whose versions change what a fit produces or how the model loads.
_RUNTIME = ("scikit-learn", "numpy", "scipy", "pandas", "skops", "mlflow")


@cache
def code_digest() -> str:
    """sha256 of the training code and the versions of the libraries the model needs."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for relative in _TRAINING_CODE:
        file = root / relative
        digest.update(relative.encode())
        digest.update(file.read_bytes() if file.is_file() else b"")
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
    code_digest: str
    code_revision: str

    @property
    def key(self) -> str:
        """Same data, spec and code give the same key: the content address of a training run."""
        joined = f"{self.data_digest}:{self.spec_digest}:{self.code_digest}"
        return hashlib.sha256(joined.encode()).hexdigest()

    def tags(self) -> dict[str, str]:
        return {
            "conveyor.data_digest": self.data_digest,
            "conveyor.spec_digest": self.spec_digest,
            "conveyor.code_digest": self.code_digest,
            "conveyor.code_revision": self.code_revision,
            "conveyor.lineage_key": self.key,
        }


def lineage_of(data_digest: str, spec_digest: str) -> Lineage:
    return Lineage(data_digest, spec_digest, code_digest(), git_revision())
