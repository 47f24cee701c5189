"""The contract on disk: JSON beside the spec, read back with errors that name the file."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from conveyor.errors import SpecError
from conveyor.spec import PipelineSpec
from tasks.contracts.draft import apply_overrides, draft_contract
from tasks.contracts.expectations import FAIL, SEVERITY
from tasks.data import display_path

logger = logging.getLogger(__name__)


def _dumps(value: Any, depth: int = 0, width: int = 96) -> str:
    """Indented JSON whose lists of plain values fill lines: one expectation reads at a glance."""
    pad = "  " * depth
    if isinstance(value, dict) and value:
        items = [f"{pad}  {json.dumps(k)}: {_dumps(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value:
        if any(isinstance(v, (dict, list)) for v in value):
            items = [f"{pad}  {_dumps(v, depth + 1)}" for v in value]
            return "[\n" + ",\n".join(items) + f"\n{pad}]"
        inline = json.dumps(value, allow_nan=False)
        if len(pad) + len(inline) <= width:
            return inline
        lines, line = [], ""
        for text in (json.dumps(v, allow_nan=False) for v in value):
            if line and len(pad) + 2 + len(line) + len(text) + 2 > width:
                lines.append(line)
                line = ""
            line = f"{line}, {text}" if line else text
        lines.append(line)
        return "[\n" + ",\n".join(f"{pad}  {line}" for line in lines) + f"\n{pad}]"
    return json.dumps(value, allow_nan=False)


def save_contract(suite: dict[str, Any], path: Path) -> Path:
    """Write the suite as indented JSON (atomically: a reader never sees half a contract)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(_dumps(suite) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def load_contract(path: Path) -> dict[str, Any]:
    """Read a contract; a malformed one is a spec error naming the file and the line."""
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{display_path(str(path))}: contract file not found") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise SpecError(f"{display_path(str(path))}: invalid JSON at {where}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{display_path(str(path))}: not UTF-8 text") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise SpecError(f"{display_path(str(path))}: not an expectation suite (no 'expectations' list)")
    for index, expectation in enumerate(suite["expectations"]):
        if not isinstance(expectation, dict) or not isinstance(expectation.get("type"), str):
            raise SpecError(f"{display_path(str(path))}: expectation {index} has no 'type'")
        level = expectation.get("meta", {}).get("on_violation", FAIL)
        if level not in SEVERITY:
            raise SpecError(
                f"{display_path(str(path))}: expectation {index} ({expectation['type']}): "
                f"meta.on_violation must be 'fail' or 'warn', not {level!r}"
            )
    suite.setdefault("name", path.stem)
    return suite


def contract_digest(suite: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest()


def ensure_contract(spec: PipelineSpec, frame: pd.DataFrame) -> tuple[dict[str, Any], bool]:
    """The spec's contract with its overrides applied; drafted from `frame` when missing."""
    path = spec.contract_path
    if path.exists():
        return apply_overrides(load_contract(path), spec.contract.expectations), False
    suite = draft_contract(spec, frame)
    save_contract(suite, path)
    logger.info("%s: no contract yet; drafted one from this data", path)
    return suite, True
