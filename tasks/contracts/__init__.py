"""Data contracts: a Great Expectations suite per spec, drafted from data, kept as JSON, enforced.

The contract is a GX 1.x expectation suite in GX's own JSON shape (`to_json_dict()`), stored
beside the spec as `pipelines/<name>.expectations.json` so it can be reviewed and edited.
Each expectation carries `meta.on_violation`: `fail` refuses the data, `warn` only reports.

The package, one concern a module:
- `expectations`: the vocabulary (expectation types, type families, Conveyor's own checks);
- `draft`: drafting a suite from data, the spec's overrides, the serving contract;
- `store`: the suite as JSON beside the spec;
- `gx_runner`: running GX in an ephemeral context;
- `checks`: the checks GX cannot express well (infinities, the target, label leakage);
- `describe`, `report`: problems in words, the validation report and its one-line message;
- `validate`: a frame or a dataset against its contract, and `conveyor contract init`.
This module holds the Prefect task and re-exports what other modules import.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from conveyor.spec import PipelineSpec
from tasks.contracts.checks import leaked_columns
from tasks.contracts.draft import apply_overrides, default_min_rows, draft_contract, serving_contract, widened_range
from tasks.contracts.expectations import (
    BETWEEN,
    COLUMN_SET,
    DUPLICATES,
    FAIL,
    IN_SET,
    NOT_NULL,
    ROW_COUNT,
    WARN,
)
from tasks.contracts.report import Failure, ValidationReport, check
from tasks.contracts.store import contract_digest, ensure_contract, load_contract, save_contract
from tasks.contracts.validate import init_contract, validate_dataset, validate_frame
from tasks.data import Dataset

__all__ = [
    "BETWEEN",
    "COLUMN_SET",
    "DUPLICATES",
    "FAIL",
    "IN_SET",
    "NOT_NULL",
    "ROW_COUNT",
    "WARN",
    "Failure",
    "ValidationReport",
    "apply_overrides",
    "check",
    "contract_digest",
    "default_min_rows",
    "draft_contract",
    "ensure_contract",
    "init_contract",
    "leaked_columns",
    "load_contract",
    "save_contract",
    "serving_contract",
    "validate_data",
    "validate_dataset",
    "validate_frame",
    "widened_range",
]


def _artifact_key(name: str) -> str:
    return "validation-" + "".join(char if char.isalnum() else "-" for char in name.lower())


# Never cached: a cache key would hash the whole frame, and a skipped validation is no validation.
@task(name="validate_data", cache_policy=NO_CACHE)
def validate_data(spec: PipelineSpec, dataset: Dataset) -> ValidationReport:
    """Check the data against its contract; DataError when broken (no retries: data is data)."""
    from prefect.artifacts import create_markdown_artifact

    log = get_run_logger()
    report = validate_dataset(spec, dataset)
    if (note := report.draft_note()) is not None:
        (log.warning if report.success else log.info)(note)
    create_markdown_artifact(report.markdown(), key=_artifact_key(spec.name), description=report.message()[:500])
    log.info("%s (%.2f s)", report.message(), report.seconds)
    check(report)
    return report
