"""What a training run comes from: the digests of its data, contract and spec, and the version
already trained from them."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from conveyor import registry
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.contracts import contract_digest, load_contract
from tasks.data import data_digest

# Version tags a promotion writes; the decision tag is written last and means "done".
DECISION = "conveyor.decision"
HELD = "conveyor.promotion_held"


def contract_file_digest(spec: PipelineSpec) -> str | None:
    """sha256 of the spec's contract as stored (None when no contract exists yet)."""
    path = spec.contract_path
    return contract_digest(load_contract(path)) if path.exists() else None


def is_final(version: Any, allow_promotion: bool) -> bool:
    """A version whose job is done: decided, and not held back from a promotion now allowed."""
    tags = version.tags
    if DECISION not in tags:
        return False  # registered by a run that died before deciding: a rerun adopts it
    return not (allow_promotion and tags.get(HELD) == "true")


@task(name="digest_data", **IO_TASK)
def digest_data(spec: PipelineSpec, data_path: str | None) -> str:
    """sha256 over the data files' bytes (each size-checked first), taken before parsing so an
    unchanged rerun reads nothing."""
    return data_digest(data_path or spec.resolve_path(spec.data.path), spec.data.max_file_mb)


@task(name="digest_contract", **IO_TASK)
def digest_contract(spec: PipelineSpec) -> str | None:
    """The contract's digest: an edited contract is a new training input."""
    return contract_file_digest(spec)


@task(name="find_existing_version", cache_policy=NO_CACHE)
def find_existing_version(name: str, lineage_key: str) -> Any | None:
    """The version already registered from the same data, contract, spec and code, if any
    (registry lookups are never cached)."""
    return registry.find_version_by_tag(name, "conveyor.lineage_key", lineage_key)
