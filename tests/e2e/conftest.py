"""One SQLite stack for the whole e2e session: starting one costs about a minute here.

Every module that needs a running stack asks for `running_stack`. A
module declares its own models in a function `stack_project(root)` that writes their specs and
data into the project: the fixture calls it for every selected module before `conveyor up`, so
each model is deployed at start-up and each module works on models no other module touches. A
test that stops the stack (the `down` test) leaves it down; the next user starts it again.

A `conveyor` subprocess with no PREFECT_API_URL starts a temporary Prefect server of its own
(5-10 s here); the tests that are not about that embedded mode pass `prefect_api_url` instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import Stack, new_stack, start, stop


@pytest.fixture(scope="session")
def session_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = new_stack(tmp_path_factory.mktemp("stack") / "project")
    modules = {item.module for item in request.session.items if item.module is not None}
    for module in sorted(modules, key=lambda m: m.__name__):
        if callable(write := getattr(module, "stack_project", None)):
            write(stack.root)
    start(stack)
    try:
        yield stack
    finally:
        stop(stack)


@pytest.fixture(scope="module")
def running_stack(session_stack: Stack) -> Stack:
    """The session's stack for one module, started again when an earlier module stopped it."""
    return session_stack if session_stack.running else start(session_stack)


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness: None) -> str:
    """The session harness's Prefect API (already up for the flow tier), for CLI subprocesses."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())
