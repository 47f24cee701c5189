"""The baseline: the script a user would write instead of Conveyor, with the same libraries.

Same steps as the training flow, no Prefect: read the CSV and digest it, validate it with the
same Great Expectations suite, split, fit the same sklearn Pipeline, evaluate (metrics, plots,
permutation importance), log the model with pinned requirements, register it and set the alias.
Usage: plain_train.py CSV TARGET SUITE_JSON TRACKING_URI MODEL_NAME
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from importlib import metadata


def main(csv: str, target: str, suite_path: str, tracking_uri: str, name: str) -> None:
    import great_expectations as gx
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn import metrics
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    with open(csv, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    frame = pd.read_csv(csv, engine="pyarrow")

    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas("plain")
    batch = source.add_dataframe_asset("frame").add_batch_definition_whole_dataframe("all")
    with open(suite_path) as handle:
        suite_json = json.load(handle)
    suite = context.suites.add(gx.ExpectationSuite(name="plain"))
    for item in suite_json["expectations"]:
        cls = gx.expectations.registry.get_expectation_impl(item["type"])
        suite.add_expectation(cls(**item["kwargs"]))
    result = batch.get_batch(batch_parameters={"dataframe": frame}).validate(suite, result_format="BASIC")
    if not result.success:
        raise SystemExit("validation failed")

    X = frame.drop(columns=[target])
    y = frame[target]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
    categorical = [c for c in X.columns if c not in numeric]
    model = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("numeric", Pipeline([("impute", SimpleImputer(strategy="median"))]), numeric),
                        (
                            "categorical",
                            Pipeline(
                                [
                                    ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                                    (
                                        "onehot",
                                        OneHotEncoder(
                                            handle_unknown="infrequent_if_exist",
                                            min_frequency=0.01,
                                            max_categories=30,
                                            sparse_output=False,
                                        ),
                                    ),
                                ]
                            ),
                            categorical,
                        ),
                    ]
                ),
            ),
            ("model", HistGradientBoostingClassifier()),
        ]
    ).fit(X_train, y_train)

    proba = model.predict_proba(X_test)
    predicted = model.classes_[proba.argmax(axis=1)]
    positive = y_test == model.classes_[1]
    scores = {
        "accuracy": metrics.accuracy_score(y_test, predicted),
        "f1_macro": metrics.f1_score(y_test, predicted, average="macro"),
        "log_loss": metrics.log_loss(y_test, proba, labels=model.classes_),
        "roc_auc": metrics.roc_auc_score(positive, proba[:, 1]),
        "average_precision": metrics.average_precision_score(positive, proba[:, 1]),
    }
    sample = X_test.sample(min(len(X_test), 2000), random_state=42)
    importance = permutation_importance(
        model, sample, y_test.loc[sample.index], scoring="balanced_accuracy", n_repeats=3, random_state=42
    )
    plots = {}
    for name_, display in (
        ("confusion_matrix.png", metrics.ConfusionMatrixDisplay.from_predictions),
        ("roc_curve.png", metrics.RocCurveDisplay.from_predictions),
    ):
        figure, axis = plt.subplots()
        if name_ == "confusion_matrix.png":
            display(y_test, predicted, ax=axis)
        else:
            display(positive, proba[:, 1], ax=axis)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plots[name_] = buffer.getvalue()
        plt.close(figure)

    import skops.io

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    with mlflow.start_run() as run:
        mlflow.set_tag("data_digest", digest)
        mlflow.log_metrics(scores)
        mlflow.log_dict(dict(zip(X.columns, importance.importances_mean.tolist(), strict=True)), "importance.json")
        for plot_name, content in plots.items():
            mlflow.log_text(content.hex(), f"plots/{plot_name}.hex")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X_test.head(5), proba[:5]),
            input_example=X_test.head(5),
            pip_requirements=[f"scikit-learn=={metadata.version('scikit-learn')}"],
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        )
    client = mlflow.MlflowClient()
    version = (
        client.create_model_version(name, info.model_uri, run_id=run.info.run_id) if _ensure(client, name) else None
    )
    client.set_registered_model_alias(name, "champion", version.version)


def _ensure(client, name: str) -> bool:
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    return True


if __name__ == "__main__":
    main(*sys.argv[1:6])
