"""Build one sklearn Pipeline from the spec and fit it on the training split only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.base import BaseEstimator, TransformerMixin, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from conveyor.errors import SpecError
from conveyor.orchestration import IO_TASK
from conveyor.spec import METRICS, PipelineSpec, import_estimator

# One-hot defaults, chosen by measurement (benchmarks/results/categories.json).
ONE_HOT_MIN_FREQUENCY: float | int | None = None
ONE_HOT_MAX_CATEGORIES = 250

# Trees split on thresholds: scaling changes nothing for them.
_SCALE_FREE_MODULES = ("sklearn.ensemble", "sklearn.tree")

# sklearn scorer names for the metrics a search can optimise.
_SCORERS = {
    "roc_auc": "roc_auc",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "f1": "f1",
    "f1_macro": "f1_macro",
    "precision": "precision",
    "recall": "recall",
    "average_precision": "average_precision",
    "log_loss": "neg_log_loss",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}


@dataclass(frozen=True)
class ColumnRoles:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    dates: tuple[str, ...] = ()


def holds_dates(values: pd.Series) -> bool:
    """datetime64 (with or without a time zone), or objects that are all dates or datetimes, as
    pyarrow reads an ISO date column (`datetime.date`)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return True
    if values.dtype != object:
        return False
    sample = values.dropna().head(1000)
    return len(sample) > 0 and all(isinstance(value, (date, pd.Timestamp)) for value in sample)


def infer_columns(X: pd.DataFrame) -> ColumnRoles:
    """Numbers and booleans are numeric; text and categories are categorical; dates and datetimes
    become numeric parts (DateParts); the rest is left out."""
    numeric, categorical, dates = [], [], []
    for column in X.columns:
        dtype = X[column].dtype
        if holds_dates(X[column]):
            dates.append(column)
        elif pd.api.types.is_numeric_dtype(dtype):
            numeric.append(column)
        elif isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
            categorical.append(column)
    return ColumnRoles(tuple(numeric), tuple(categorical), tuple(dates))


class DateParts(TransformerMixin, BaseEstimator):
    """Dates and datetimes as numbers a model can split on: year, month, day and day of week, plus
    the hour when the training values carry times of day. Time zones are converted to UTC first;
    values that do not parse become missing (imputed next)."""

    def fit(self, X: Any, y: Any = None) -> DateParts:
        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        self.parts_ = [
            [*_DATE_PARTS, *(("hour",) if _has_times(_as_datetime(frame[c])) else ())] for c in frame.columns
        ]
        return self

    def transform(self, X: Any) -> np.ndarray:
        frame = pd.DataFrame(X)
        columns = [
            getattr(_as_datetime(frame[column]).dt, part).astype("float64").to_numpy()
            for column, parts in zip(frame.columns, self.parts_, strict=True)
            for part in parts
        ]
        return np.column_stack(columns) if columns else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        return np.asarray(
            [f"{n}_{p}" for n, parts in zip(names, self.parts_, strict=True) for p in parts], dtype=object
        )


_DATE_PARTS = ("year", "month", "day", "dayofweek")


def _as_datetime(values: pd.Series) -> pd.Series:
    """Naive datetimes as they are, aware ones in UTC without the zone; unparsable values as NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    return parsed.dt.tz_localize(None)


def _has_times(values: pd.Series) -> bool:
    present = values.dropna()
    return bool(len(present)) and bool((present != present.dt.normalize()).any())


def seeded_params(estimator_cls: type, spec: PipelineSpec) -> dict[str, Any]:
    """The spec's parameters, with `random_state` from the split seed when the estimator takes
    one and the spec does not set it: the same inputs give the same model."""
    params = dict(spec.model.params)
    if "random_state" not in params and "random_state" in estimator_cls().get_params():
        params["random_state"] = spec.data.split.seed
    return params


def build_pipeline(spec: PipelineSpec, roles: ColumnRoles) -> Pipeline:
    """Preprocessing and estimator as one Pipeline, so training and serving cannot skew."""
    estimator_cls = import_estimator(spec.estimator_path)
    try:
        estimator: BaseEstimator = estimator_cls(**seeded_params(estimator_cls, spec))
    except TypeError as exc:
        raise SpecError(f"{spec.source}: model.params: {exc}") from None
    fits = is_regressor(estimator) if spec.task == "regression" else is_classifier(estimator)
    if not fits:
        raise SpecError(f"{spec.source}: model.estimator: {spec.estimator_path} does not fit a {spec.task} task")
    scale = not estimator_cls.__module__.startswith(_SCALE_FREE_MODULES)
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale:
        numeric_steps.append(("scale", StandardScaler()))
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            (
                "onehot",
                # The 249 most frequent levels of a column keep a column each; rarer and unseen values
                # share one, so high-cardinality text can't explode. Lumping every level under 1 % made
                # models up to 3.3x worse on real tables (benchmarks/bench_categories.py).
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist",
                    min_frequency=ONE_HOT_MIN_FREQUENCY,
                    max_categories=ONE_HOT_MAX_CATEGORIES,
                    sparse_output=False,
                ),
            ),
        ]
    )
    dates = Pipeline([("parts", DateParts()), ("impute", SimpleImputer(strategy="median"))])
    preprocess = ColumnTransformer(
        [
            ("numeric", Pipeline(numeric_steps), list(roles.numeric)),
            ("categorical", categorical, list(roles.categorical)),
            *([("dates", dates, list(roles.dates))] if roles.dates else []),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def fit_pipeline(spec: PipelineSpec, X_train: pd.DataFrame, y_train: pd.Series) -> tuple[Pipeline, dict[str, Any]]:
    """Fit the spec's pipeline (with its search, when declared); return it and the best params."""
    roles = infer_columns(X_train)
    pipeline = build_pipeline(spec, roles)
    X = X_train
    search = spec.model.search
    if search is None:
        return pipeline.fit(X, y_train), {}
    grid = {f"model__{key}": values for key, values in search.params.items()}
    scoring = _SCORERS[spec.primary_metric]
    if spec.task == "multiclass" and spec.primary_metric == "roc_auc":
        scoring = "roc_auc_ovr"
    searcher: GridSearchCV | RandomizedSearchCV
    if search.method == "grid":
        searcher = GridSearchCV(pipeline, grid, scoring=scoring, cv=search.cv)
    else:
        searcher = RandomizedSearchCV(
            pipeline,
            grid,
            n_iter=search.n_iter,
            scoring=scoring,
            cv=search.cv,
            random_state=spec.data.split.seed,
        )
    searcher.fit(X, y_train)
    best = {key.removeprefix("model__"): value for key, value in searcher.best_params_.items()}
    return searcher.best_estimator_, best


def greater_is_better(metric: str) -> bool:
    return METRICS[metric][1]


# Not cached: a cached fit would come back through pickle, outside the digest-checked path that
# loads models (an unchanged rerun never gets here: the lineage key finds its version first).
@task(name="train_model", cache_policy=NO_CACHE)
def train_model(spec: PipelineSpec, X_train: pd.DataFrame, y_train: pd.Series) -> tuple[Pipeline, dict[str, Any]]:
    """Fit preprocessing and estimator on the training split only."""
    return fit_pipeline(spec, X_train, y_train)


@task(name="load_adopted_model", **IO_TASK)
def load_adopted_model(name: str, version: str) -> Any:
    """The model an interrupted run registered, loaded through the registry's checks, not refitted."""
    from conveyor import registry

    return registry.load_model(name, version)
