"""Every import runs down: app -> flows -> tasks -> conveyor (the core).

Parses each module's source (imports inside functions included, `if TYPE_CHECKING:` too) rather
than importing it, so a lazy upward import cannot hide.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("conveyor", "tasks", "flows", "app")  # lowest first
RANK = {name: rank for rank, name in enumerate(LAYERS)}


def imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the tree; relative imports resolved."""
    found = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def upward_imports(path: Path) -> list[str]:
    """`file:line imports module` for each import of a layer above the file's own."""
    relative = path.relative_to(ROOT)
    module = ".".join(relative.with_suffix("").parts)
    own = RANK[relative.parts[0]]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{relative}:{line} imports {name}"
        for line, name in imported_modules(tree, module)
        if RANK.get(name.split(".")[0], -1) > own
    ]


def layer_files(layer: str) -> list[Path]:
    return sorted(path for path in (ROOT / layer).rglob("*.py") if "__pycache__" not in path.parts)


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_layer_above_its_own(layer: str) -> None:
    files = layer_files(layer)
    assert files, f"no modules found under {layer}/"
    offenders = [line for path in files for line in upward_imports(path)]
    above = ", ".join(LAYERS[RANK[layer] + 1 :]) or "nothing"
    assert not offenders, f"{layer}/ may import only itself and layers below it (not {above}):\n" + "\n".join(offenders)


def test_the_checker_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from flows.training import training_flow\n"
        "def f():\n"
        "    import app.cli\n"
        "    from . import sibling\n"
        "    from ..tasks import data\n"
    )
    names = [name for _, name in imported_modules(ast.parse(source), "tasks.drift.compare")]
    assert names == ["typing", "flows.training", "app.cli", "tasks.drift", "tasks.tasks"]


def test_the_commands_never_import_the_cli_root() -> None:
    """app/cli.py registers the commands; a command module importing it back would be a cycle."""
    for path in sorted((ROOT / "app").glob("commands_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [name for _, name in imported_modules(tree, f"app.{path.stem}")]
        assert "app.cli" not in names, f"{path.name} imports app.cli"
