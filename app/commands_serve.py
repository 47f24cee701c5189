"""`conveyor serve`: every registered model (or those named) over HTTP, following `champion`."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from app.console import say
from app.stack.config import HOST


def serve(
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind (only this machine by default).")] = HOST,
    models: Annotated[str | None, typer.Option(help="Comma-separated model names (default: every champion).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each holds its own model cache).")] = 1,
    max_body_mb: Annotated[float, typer.Option(help="Larger request bodies get 413.")] = 10.0,
    cache_mb: Annotated[float, typer.Option(help="Models loaded at once, in MB; least recently used unloaded.")] = 2048,
    poll_seconds: Annotated[float, typer.Option(help="How often the registry is asked where aliases point.")] = 1.0,
) -> None:
    """Serve the models: POST /models/<name>/invocations, GET /health, /ready, /models, /metrics."""
    import uvicorn

    os.environ.update(
        CONVEYOR_SERVE_MAX_BODY_MB=str(max_body_mb),
        CONVEYOR_SERVE_CACHE_MB=str(cache_mb),
        CONVEYOR_SERVE_POLL_SECONDS=str(poll_seconds),
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    if models:
        os.environ["CONVEYOR_SERVE_MODELS"] = models
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("mlflow", "alembic", "prefect", "great_expectations"):
        logging.getLogger(name).setLevel(logging.ERROR)
    say(f"serving on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}); POST /models/<name>/invocations")
    uvicorn.run(
        "app.serving.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


def register(app: typer.Typer) -> None:
    """Add `serve` to the `conveyor` command."""
    app.command("serve")(serve)
