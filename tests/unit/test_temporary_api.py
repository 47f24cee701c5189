"""The embedded mode's temporary Prefect server: a real one, started for the block and gone after it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor import links, locks
from conveyor.errors import UnreachableError
from conveyor.temporary_api import TemporaryAPI, begin_temporary_api, one_prefect_api


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No Prefect API named (the harness's, when the session has one, is set aside), a fresh Prefect home."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv(locks.TEMPORARY_API, raising=False)
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path))
    harness = {PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL}
    with temporary_settings(updates={PREFECT_HOME: tmp_path / ".prefect"}, restore_defaults=harness):
        yield tmp_path


def listening(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_block_runs_on_its_own_server_which_keeps_file_locks_and_stops_after(embedded: Path) -> None:
    from flows.governance import on_server

    started = begin_temporary_api()
    assert isinstance(started, TemporaryAPI)
    with one_prefect_api(started) as url:
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert (embedded / ".prefect" / "prefect.db").is_file()  # Prefect's own database, in PREFECT_HOME
        # A command's own server dies with it: no lock can live there, no person can answer a pause.
        assert locks.backend() == "file"
        assert not on_server()
        assert links.prefect_flow_run_url("0f00") is None  # a page that would die with the command
    assert not listening(url)


def test_flow_runs_under_the_commands_own_server_send_no_heartbeats(embedded: Path) -> None:
    """Prefect joins a run's heartbeat thread at its end, up to a second after the body: not worth
    it for a server that dies with the command. A server named by the user keeps Prefect's default."""
    from prefect import flow
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    @flow
    def heartbeat_seen_by_the_run() -> int | None:
        return get_current_settings().flows.heartbeat_frequency

    with temporary_settings(restore_defaults={PREFECT_FLOWS_HEARTBEAT_FREQUENCY}):  # the harness turns them off
        default = PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value()
        assert default is not None
        with one_prefect_api():
            assert heartbeat_seen_by_the_run() is None
        assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() == default
        with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}), one_prefect_api():
            assert get_current_settings().flows.heartbeat_frequency == default


def test_a_named_api_is_used_as_it_is(embedded: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert begin_temporary_api() is None
        with one_prefect_api() as url:
            assert url == "http://127.0.0.1:9/api"
            assert links.prefect_flow_run_url("0f00") == "http://127.0.0.1:9/runs/flow-run/0f00"


def test_a_server_that_cannot_start_is_one_clear_error(embedded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database the server cannot open: it exits, and the wait says so instead of waiting out its timeout."""
    missing = embedded / "no-such-folder" / "prefect.db"
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{missing}")
    server = TemporaryAPI().begin()
    with pytest.raises(
        UnreachableError, match=r"temporary server exited with code \d+: .*unable to open database file"
    ):
        server.wait()
    server.stop()
