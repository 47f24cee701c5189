"""A new SQLite database as a copy of an empty one made at install: the parts Prefect's database
and MLflow's embedded store share (`conveyor.prefect_database`, `conveyor.mlflow_database`).

Only a missing file is ever written, never over another: the copy is linked into place, so a
database that appears meanwhile (another command starting) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (`sqlite:////abs/path.db`, `sqlite+aiosqlite:///rel.db`);
    None for another database or one in memory. Read by hand: importing SQLAlchemy for it would
    delay a Prefect server's start by about 0.2 s."""
    scheme, _, rest = url.partition("://")
    name = rest[1:].split("?", 1)[0] if rest.startswith("/") else ""
    if not scheme.startswith("sqlite") or name in ("", ":memory:") or name.startswith("file:"):
        return None
    return Path(name)


def seed(url: str, template: Path) -> bool:
    """Copy `template` to the database file of `url` when there is no such file yet.

    True when it copied. Nothing happens for another database, a missing template, or a file that
    exists (its write-ahead log or journal included): that is a database, never overwritten.
    """
    target = sqlite_file(url)
    if target is None or not template.is_file():
        return False
    if any(Path(f"{target}{suffix}").exists() for suffix in ("", "-wal", "-shm", "-journal")):
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".seed")
    except OSError:  # a folder that cannot be written: the database's owner will say so in its own words
        return False
    os.close(fd)
    try:
        shutil.copyfile(template, scratch)
        os.link(scratch, target)  # fails, rather than replaces, when a database appeared meanwhile
    except OSError:  # that database, a full disk, a file system without hard links: the owner creates it
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
    return True


def exists(url: str) -> bool:
    """Whether `url` is a SQLite database whose file exists."""
    target = sqlite_file(url)
    return target is not None and target.is_file()


def tables_with_rows(database: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name for name in names if db.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone()}


def keep(database: Path, destination: Path) -> Path:
    """Copy `database` to `destination` as one consistent file with no log of its own, replacing
    an earlier template only once the copy is whole."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    partial.unlink(missing_ok=True)  # an interrupted build's
    with contextlib.closing(sqlite3.connect(database)) as new, contextlib.closing(sqlite3.connect(partial)) as out:
        new.backup(out)  # whatever is still in the write-ahead log included
        # Reading the copy creates no log (its owner sets its own mode on the copy).
        out.execute("PRAGMA journal_mode = DELETE")
    os.replace(partial, destination)
    return destination


def check_rows(database: Path, expected: frozenset[str], what: str) -> None:
    """Refuse a database whose tables with rows are not exactly `expected`: a template that held a
    run or a key would hand it to every copy; one that lacks what its owner writes at creation
    would leave every copy without it."""
    rows = tables_with_rows(database)
    if unexpected := rows - expected:
        raise RuntimeError(f"{database}: a new {what} holds more than its schema: {', '.join(sorted(unexpected))}")
    if missing := expected - rows:
        raise RuntimeError(f"{database}: a new {what} lacks {', '.join(sorted(missing))}")
