"""The limit for bench_serving: a minimal FastAPI app that parses the JSON and calls `predict`.

No contract, no logging, no alias following: the loaded sklearn pipeline (the same digest-checked
champion Conveyor serves) behind one route. Run: uvicorn serving_limit:create_app --factory
with CONVEYOR_HOME pointing at the project and BENCH_MODEL naming the model.
"""

from __future__ import annotations

import os

import orjson
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import Response


def create_app() -> FastAPI:
    from conveyor import registry

    name = os.environ.get("BENCH_MODEL", "bench")
    champion = registry.alias_version(name, registry.CHAMPION)
    if champion is None:
        raise SystemExit(f"{name} has no champion")
    model = registry.load_model(name, str(champion.version))
    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        split = orjson.loads(await request.body())["dataframe_split"]
        frame = pd.DataFrame(split["data"], columns=split["columns"])
        return Response(orjson.dumps({"predictions": model.predict(frame).tolist()}), media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
