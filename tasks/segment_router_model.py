"""The MLflow pyfunc of a segmented model's router version, logged as code (MLflow "models from
code"): `models:/<name>@champion` loads this file and its `routes.json`, nothing pickled."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class SegmentRouterModel(PythonModel):
    """Rows routed by segment to the pinned segment champions; the rest to the all-rows model."""

    def load_context(self, context: Any) -> None:
        from tasks.segments import router_from_file

        self.router = router_from_file(context.artifacts["routes"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # MLflow reads hints as a schema
        import pandas as pd

        return self.router.predict_frame(pd.DataFrame(model_input))


mlflow.models.set_model(SegmentRouterModel())
