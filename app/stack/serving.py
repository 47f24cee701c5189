"""The stack's model server: `conveyor serve` on 127.0.0.1, started once MLflow answers.

Its port is CONVEYOR_SERVING_PORT (default 8080); it reads the registry through the stack's
MLflow server, with the worker's environment (credentials on the hardened profile).
"""

from __future__ import annotations

from app.stack.config import HOST, StackConfig, port_from_env
from app.stack.processes import bin_path

SERVING = "serving"


def port() -> int:
    return port_from_env("CONVEYOR_SERVING_PORT", 8080)


def url(serving_port: int) -> str:
    return f"http://{HOST}:{serving_port}"


def command(serving_port: int) -> list[str]:
    return [bin_path("conveyor"), "serve", "--host", HOST, "--port", str(serving_port)]


def env(config: StackConfig) -> dict[str, str]:
    from app.stack.services import worker_env

    found = worker_env(config)
    found.update(OMP_NUM_THREADS="1")  # requests are the parallelism: one OpenMP thread per predict
    return found


def healthy(serving_url: str | None) -> bool:
    import httpx

    if not serving_url:
        return False
    try:
        return httpx.get(f"{serving_url}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False
