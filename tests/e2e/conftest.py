"""Shared SQLite stacks for the e2e session: starting one costs half a minute to a minute here.

A module that needs a running stack names the one it shares in a line `STACK = "<name>"` and asks
for `running_stack`. The modules of one stack run one after another on one xdist worker
(`tests/conftest.py`), so two stacks run side by side. A module declares its own models in a
function `stack_project(root)` that writes their specs and data into the project: the fixture
calls it for every selected module of that stack before `conveyor up`, so each model is deployed
at start-up and each module works on models no other module touches. A test that stops the stack
(the `down` test) leaves it down; the next module starts it again. After its last module a stack
is stopped, so that its processes do not idle beside the rest of the session.

A `conveyor` subprocess with no PREFECT_API_URL starts a temporary Prefect server of its own
(5-10 s here); the tests that are not about that embedded mode pass `prefect_api_url` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import shared_stack
from tests.e2e.harness import Stack, new_stack, start, stop


def modules_on(session: pytest.Session, name: str) -> list[ModuleType]:
    """The selected modules on the shared stack `name`, in the order they run."""
    modules: dict[str, ModuleType] = {}
    for item in session.items:
        if item.module is not None and shared_stack(item.nodeid.split("::", 1)[0]) == name:
            modules.setdefault(item.module.__name__, item.module)
    return list(modules.values())


@pytest.fixture(scope="session")
def shared_stacks() -> Iterator[dict[str, Stack]]:
    """The session's shared stacks by name, made as their first module asks; whatever still runs
    at the end of the session is stopped."""
    stacks: dict[str, Stack] = {}
    try:
        yield stacks
    finally:
        for stack in stacks.values():
            if stack.running:
                stop(stack)


@pytest.fixture(scope="module")
def running_stack(
    request: pytest.FixtureRequest, shared_stacks: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The module's shared stack, made and started by its first module (again after a `down`),
    stopped after its last."""
    module = request.module
    name = shared_stack(request.node.nodeid.split("::", 1)[0])
    assert name, f'{module.__name__} asks for running_stack: name the stack it shares in a line STACK = "<name>"'
    modules = modules_on(request.session, name)
    if name not in shared_stacks:
        stack = new_stack(tmp_path_factory.mktemp(f"stack-{name}") / "project")
        for each in modules:
            if callable(write := getattr(each, "stack_project", None)):
                write(stack.root)
        shared_stacks[name] = stack
    stack = shared_stacks[name]
    yield stack if stack.running else start(stack)
    if module is modules[-1] and stack.running:
        stop(stack)


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness: None) -> str:
    """The session harness's Prefect API (already up for the flow tier), for CLI subprocesses."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())
