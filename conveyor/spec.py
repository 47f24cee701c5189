"""The pipeline spec: one frozen pydantic model per YAML file, defaults for all but the data."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from conveyor.errors import SpecError

TaskType = Literal["binary", "multiclass", "regression"]

# A spec is data a person wrote, read by watch and deploy for every model: bound what it may cost.
MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_NODES = 100_000  # values after YAML aliases are expanded
MAX_SPEC_DEPTH = 50
# Counts a spec may ask an estimator for (n_estimators, max_iter, ...): beyond this a fit never ends.
MAX_COUNT_PARAM = 100_000
ESTIMATOR_PACKAGES_ENV = "CONVEYOR_ESTIMATOR_PACKAGES"
_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

# Metric name -> (task types it fits, greater is better).
METRICS: dict[str, tuple[frozenset[str], bool]] = {
    "roc_auc": (frozenset({"binary", "multiclass"}), True),
    "accuracy": (frozenset({"binary", "multiclass"}), True),
    "balanced_accuracy": (frozenset({"binary", "multiclass"}), True),
    "f1": (frozenset({"binary"}), True),
    "f1_macro": (frozenset({"binary", "multiclass"}), True),
    "precision": (frozenset({"binary"}), True),
    "recall": (frozenset({"binary"}), True),
    "average_precision": (frozenset({"binary"}), True),
    "log_loss": (frozenset({"binary", "multiclass"}), False),
    "rmse": (frozenset({"regression"}), False),
    "mae": (frozenset({"regression"}), False),
    "r2": (frozenset({"regression"}), True),
}

DEFAULT_METRIC: dict[str, str] = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}
DEFAULT_ESTIMATOR: dict[str, str] = {
    "binary": "sklearn.ensemble.HistGradientBoostingClassifier",
    "multiclass": "sklearn.ensemble.HistGradientBoostingClassifier",
    "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSpec(_Section):
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    time_column: str | None = None


class DataSpec(_Section):
    path: str
    target: str
    id_column: str | None = None
    drop: tuple[str, ...] = ()
    detect_id_columns: bool = Field(
        True, description="Leave row names, row numbers and id-named unique columns out of the features."
    )
    split: SplitSpec = SplitSpec()
    max_file_mb: float = Field(2048, gt=0, description="Files above this size are refused unread.")


class SearchSpec(_Section):
    method: Literal["grid", "random"] = "random"
    params: dict[str, list[Any]]
    n_iter: int = Field(10, ge=1, le=1000)
    cv: int = Field(3, ge=2, le=20)


class ModelSpec(_Section):
    estimator: str | None = None
    params: dict[str, Any] = {}
    search: SearchSpec | None = None

    @field_validator("estimator")
    @classmethod
    def _importable_estimator(cls, value: str | None) -> str | None:
        if value is not None:
            import_estimator(value)
        return value

    @field_validator("params")
    @classmethod
    def _valid_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if estimator := info.data.get("estimator"):
            check_params(import_estimator(estimator), value)
        return value

    @field_validator("search")
    @classmethod
    def _valid_search(cls, value: SearchSpec | None, info: ValidationInfo) -> SearchSpec | None:
        if value is not None and (estimator := info.data.get("estimator")):
            check_search(import_estimator(estimator), value)
        return value


class EvaluationSpec(_Section):
    metric: str | None = None
    floors: dict[str, float] = {}
    margin: float = Field(0.0, ge=0)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; choose one of {sorted(METRICS)}")
        return value

    @field_validator("floors")
    @classmethod
    def _known_floor_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
        return value


class ExpectationOverride(_Section):
    """Adds or replaces one expectation of the drafted contract, matched by type and column."""

    type: str
    column: str | None = None
    kwargs: dict[str, Any] = {}
    on_violation: Literal["fail", "warn"] = "fail"


class ContractSpec(_Section):
    path: str | None = None
    expectations: tuple[ExpectationOverride, ...] = ()
    range_tolerance: float = Field(0.1, ge=0)
    min_rows: int | None = Field(None, ge=1)
    max_duplicate_fraction: float = Field(0.1, ge=0, le=1)
    allow_unseen_categories: bool = False
    leakage: Literal["fail", "warn"] = "fail"


# Fairness gate metric -> the task types it fits (fairlearn's disparities; error_difference is the
# largest gap in mean absolute error between groups, for regressors).
FAIRNESS_METRICS: dict[str, frozenset[str]] = {
    "demographic_parity_difference": frozenset({"binary"}),
    "equalized_odds_difference": frozenset({"binary"}),
    "true_positive_rate_difference": frozenset({"binary"}),
    "false_positive_rate_difference": frozenset({"binary"}),
    "error_difference": frozenset({"regression"}),
}
# Risk tier -> how many different people must approve a candidate before it is promoted.
APPROVALS_NEEDED: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


class FairnessGate(_Section):
    """Rejects a candidate whose disparity between groups of a sensitive attribute is over `max`."""

    metric: str
    max: float = Field(ge=0)

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in FAIRNESS_METRICS:
            raise ValueError(f"unknown fairness metric {value!r}; choose one of {sorted(FAIRNESS_METRICS)}")
        return value


class GovernanceSpec(_Section):
    risk_tier: Literal["low", "medium", "high"] = "low"
    approvers: tuple[str, ...] = ()
    approval_timeout_hours: float = Field(72, gt=0, description="Then the waiting candidate is rejected.")
    sensitive_attributes: tuple[str, ...] = ()
    exclude_sensitive: bool = Field(False, description="Keep sensitive attributes out of the features.")
    fairness: FairnessGate | None = None
    intended_use: str = ""
    owner: str = ""

    @model_validator(mode="after")
    def _enough_approvers(self) -> GovernanceSpec:
        needed = APPROVALS_NEEDED[self.risk_tier]
        if len(set(self.approvers)) < needed:
            raise ValueError(
                f"risk tier {self.risk_tier!r} needs {needed} different approver(s) in 'approvers' "
                f"(listed: {list(self.approvers) or 'none'})"
            )
        if self.fairness is not None and not self.sensitive_attributes:
            raise ValueError("a fairness gate needs 'sensitive_attributes' to measure it on")
        return self


class SegmentSpec(_Section):
    """One model per value of `by` (a column or a list of columns)."""

    by: tuple[str, ...]
    min_rows: int = Field(200, ge=1, description="A smaller segment is served by the all-rows model.")
    fallback_rows: int = Field(
        100_000,
        ge=1,
        description="The all-rows model trains on a fixed sample of this many rows when the data has more.",
    )

    @field_validator("by", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("by")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("'by' names at least one column")
        return value


class ServingSpec(_Section):
    shadow: bool = Field(False, description="The challenger also scores each request; logged, never returned.")
    canary: float = Field(0.0, ge=0, le=1, description="Share of requests the challenger answers.")


class MonitoringSpec(_Section):
    psi_threshold: float = Field(0.2, gt=0)
    domain_auc_threshold: float = Field(0.7, gt=0.5, le=1)
    performance_tolerance: float = Field(0.05, ge=0, description="Allowed drop of the primary metric.")
    retrain_on: tuple[Literal["new_data", "drift", "performance"], ...] = ("new_data", "performance")
    cooldown_minutes: float = Field(60, ge=0)
    cooldown_on: tuple[Literal["new_data", "drift", "performance"], ...] = ("drift", "performance")


class ScheduleSpec(_Section):
    cron: str | None = "0 2 * * *"
    timezone: str = "UTC"


class PipelineSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    task: TaskType | None = None
    data: DataSpec
    model: ModelSpec = ModelSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    contract: ContractSpec = ContractSpec()
    governance: GovernanceSpec = GovernanceSpec()
    segments: SegmentSpec | None = None
    monitoring: MonitoringSpec = MonitoringSpec()
    serving: ServingSpec = ServingSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    source: str | None = Field(None, description="The file the spec was read from (set by load_spec).")

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> PipelineSpec:
        if self.task is not None:
            for name in [self.evaluation.metric, *self.evaluation.floors]:
                if name is not None and self.task not in METRICS[name][0]:
                    raise ValueError(f"metric {name!r} does not fit a {self.task} task")
        return self

    @model_validator(mode="after")
    def _columns_are_not_the_target(self) -> PipelineSpec:
        target = self.data.target
        if self.segments is not None and target in self.segments.by:
            raise ValueError(f"'segments.by' cannot be the target column {target!r}")
        if target in self.governance.sensitive_attributes:
            raise ValueError(f"'governance.sensitive_attributes' cannot be the target column {target!r}")
        fairness = self.governance.fairness
        if fairness is not None and self.task is not None and self.task not in FAIRNESS_METRICS[fairness.metric]:
            raise ValueError(f"fairness metric {fairness.metric!r} does not fit a {self.task} task")
        return self

    @model_validator(mode="after")
    def _default_estimator_params(self) -> PipelineSpec:
        """The default estimator depends on the task: check its parameters once the task is known."""
        if self.task is not None and self.model.estimator is None:
            estimator = import_estimator(DEFAULT_ESTIMATOR[self.task])
            try:
                check_params(estimator, self.model.params)
                if self.model.search is not None:
                    check_search(estimator, self.model.search)
            except ValueError as exc:
                raise ValueError(f"'model.params': {exc}") from None
        return self

    def for_task(self, task: TaskType) -> PipelineSpec:
        """The spec with its task type settled (inferred from the target when not given)."""
        spec = self.model_copy(update={"task": task})
        try:
            return PipelineSpec.model_validate(spec.model_dump())
        except ValidationError as exc:
            problems = "; ".join(_describe(dict(error)) for error in exc.errors())
            raise SpecError(f"{self.source or '<spec>'}: {problems}") from None

    @property
    def primary_metric(self) -> str:
        if self.task is None:
            raise RuntimeError("the task type is not settled yet")
        return self.evaluation.metric or DEFAULT_METRIC[self.task]

    @property
    def estimator_path(self) -> str:
        if self.task is None:
            raise RuntimeError("the task type is not settled yet")
        return self.model.estimator or DEFAULT_ESTIMATOR[self.task]

    @property
    def spec_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    def resolve_path(self, path: str) -> str:
        """A data path relative to the spec's folder, unless absolute or a URI."""
        if "://" in path or Path(path).is_absolute():
            return path
        # realpath, not Path.resolve: a symlink loop must reach the loader, which names it, not raise here.
        return os.path.realpath(self.spec_dir / path)

    @property
    def contract_path(self) -> Path:
        if self.contract.path:
            return Path(self.resolve_path(self.contract.path))
        return self.spec_dir / f"{self.name}.expectations.json"

    def digest(self) -> str:
        """sha256 of the spec's content (a declared task included), independent of where the file lies.

        Take it from the spec as loaded: `for_task` settles an inferred task, which the data and
        code digests already determine."""
        content = self.model_dump(mode="json", exclude={"source"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def estimator_packages() -> tuple[str, ...]:
    """The packages a spec may take its estimator from: scikit-learn, and those the project lists
    in CONVEYOR_ESTIMATOR_PACKAGES (comma-separated, e.g. `xgboost,lightgbm`)."""
    listed = os.environ.get(ESTIMATOR_PACKAGES_ENV, "")
    return ("sklearn", *(name.strip() for name in listed.split(",") if name.strip()))


def import_estimator(path: str) -> type:
    """Import `package.module.Class` from an allowed package and check that it is a scikit-learn
    estimator. The package is checked from the path alone, before anything is imported."""
    from sklearn.base import BaseEstimator

    module_name, _, class_name = path.rpartition(".")
    if not module_name or not _IMPORT_PATH.match(path):
        raise ValueError(f"estimator {path!r} is not an import path like sklearn.linear_model.Ridge")
    allowed = estimator_packages()
    if module_name.split(".")[0] not in allowed:
        raise ValueError(
            f"estimator {path!r} is outside the allowed packages {list(allowed)} "
            f"(list its package in {ESTIMATOR_PACKAGES_ENV} to allow it)"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"estimator {path!r} does not import ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise ValueError(f"estimator {path!r} is not a scikit-learn estimator")
    return cls


def check_params(estimator: type, params: dict[str, Any]) -> None:
    """Refuse parameters the estimator does not take, values of the wrong type or range (its own
    `_parameter_constraints`), and counts so large that a fit would never end."""
    from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

    signature = inspect.signature(estimator)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(params) - set(signature.parameters) - {"self"})
    if unknown and not takes_any:
        known = sorted(set(signature.parameters) - {"self"})
        raise ValueError(f"unknown parameter {unknown[0]!r} for {estimator.__name__} (it takes {', '.join(known)})")
    for key, value in params.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if _is_count(key) and number and math.isfinite(value) and abs(value) > MAX_COUNT_PARAM:
            raise ValueError(f"{key} = {value:g} is above {MAX_COUNT_PARAM} (a fit would not end)")
    constraints = getattr(estimator, "_parameter_constraints", None)
    if isinstance(constraints, dict):
        try:
            validate_parameter_constraints(constraints, params, caller_name=estimator.__name__)
        except InvalidParameterError as exc:
            raise ValueError(str(exc)) from None


def check_search(estimator: type, search: SearchSpec) -> None:
    """Every candidate value of a search, checked like a parameter."""
    for key, values in search.params.items():
        if len(values) > 1000:
            raise ValueError(f"search.params.{key}: {len(values)} candidates, at most 1000")
        for value in values:
            check_params(estimator, {key: value})


def _is_count(key: str) -> bool:
    return key.startswith(("n_", "max_")) and key not in {"max_features", "max_samples"}


def _location(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{_location(error)}'"
    if kind == "missing":
        return f"missing required key '{_location(error)}'"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"'{_location(error)}': {message}" if error["loc"] else message


def parse_spec(raw: Any, source: str = "<spec>") -> PipelineSpec:
    """Validate a parsed YAML document; every problem names the key and the file."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a pipeline spec must be a YAML mapping, got {type(raw).__name__}")
    try:
        return PipelineSpec.model_validate({**raw, "source": source})
    except ValidationError as exc:
        problems = "; ".join(_describe(dict(error)) for error in exc.errors())
        raise SpecError(f"{source}: {problems}") from None


def safe_load_bounded(text: str, source: str) -> Any:
    """yaml.safe_load, but the node graph is measured before any object is built: aliases
    expanding past MAX_SPEC_NODES values, nesting past MAX_SPEC_DEPTH, or an alias that contains
    itself are refused (a few lines of aliases can otherwise expand to gigabytes)."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise SpecError(f"{source}: nested deeper than {MAX_SPEC_DEPTH} levels") from None
        if node is None:
            return None
        _measure(node, 0, {}, set(), source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _measure(
    node: yaml.Node, depth: int, seen: dict[int, tuple[int, int]], open_: set[int], source: str
) -> tuple[int, int]:
    """(values, depth) the node expands to; memoised per node, so shared aliases cost nothing here."""
    key = id(node)
    if key in open_:
        raise SpecError(f"{source}: line {node.start_mark.line + 1}: a YAML alias refers to itself")
    if key not in seen:
        open_.add(key)
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        size, height = 1, 0
        for child in children:
            child_size, child_height = _measure(child, depth + 1, seen, open_, source)
            size, height = size + child_size, max(height, child_height + 1)
            if size > MAX_SPEC_NODES:
                raise SpecError(
                    f"{source}: line {node.start_mark.line + 1}: expands to more than {MAX_SPEC_NODES} values "
                    "(YAML aliases repeated inside each other?)"
                )
        open_.discard(key)
        seen[key] = (size, height)
    size, height = seen[key]
    if depth + height > MAX_SPEC_DEPTH:
        raise SpecError(f"{source}: line {node.start_mark.line + 1}: nested deeper than {MAX_SPEC_DEPTH} levels")
    return size, height


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate `pipelines/<name>.yaml`."""
    file = Path(path)
    if not file.is_file():
        raise SpecError(f"{file}: spec file not found")
    size = file.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{file}: {size} bytes is above the {MAX_SPEC_BYTES // 1_000_000} MB a spec may hold")
    try:
        raw = safe_load_bounded(file.read_text(encoding="utf-8"), str(file))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{file}: YAML syntax error{where}: {problem}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{file}: not UTF-8 text") from None
    return parse_spec(raw, str(file.resolve()))


def find_spec(name_or_path: str) -> PipelineSpec:
    """A spec by file path, or by model name under the project's `pipelines/`."""
    from conveyor.settings import pipelines_dir

    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        return load_spec(candidate)
    for suffix in (".yaml", ".yml"):
        file = pipelines_dir() / f"{name_or_path}{suffix}"
        if file.is_file():
            return load_spec(file)
    raise SpecError(f"no pipeline spec named {name_or_path!r} under {pipelines_dir()}")


def list_specs() -> list[Path]:
    from conveyor.settings import pipelines_dir

    folder = pipelines_dir()
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
