"""Prefect's temporary API server as `sluice run` starts it (flow.ApiServer): in the background, in a session of
its own, pointed at by PREFECT_API_URL once it answers, stopped with the run; a user's server is used instead;
a server that cannot start is one clear error. (Signals and kills of a real run: test_no_silent_loss.py.)"""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from operators.errors import SluiceError
from pipelines import flow


@pytest.fixture
def no_api_url(monkeypatch):
    """No Prefect server configured, Prefect loaded (as in a run, once it waits for the server), and no server of
    this process yet: the session's (an earlier in-process `sluice run`'s) is set aside, not reused nor stopped,
    and pointed at again afterwards."""
    for key, value in flow.PREFECT_DEFAULTS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(flow, "_server", None)
    import prefect  # noqa: F401  (loaded before the test changes its environment)

    flow._refresh_prefect_settings()
    assert not flow._configured_api_url()
    yield
    if flow._server is not None:
        flow._server.stop()
    monkeypatch.undo()  # the environment as before, then Prefect's settings from it
    flow._refresh_prefect_settings()


def test_the_run_starts_a_server_and_points_prefect_at_it_until_it_stops(no_api_url, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    memo = tmp_path / "memo_store.toml"  # where a server that registers Prefect's block types notes that it did
    monkeypatch.setenv("PREFECT_MEMO_STORE_PATH", str(memo))
    server = flow.start_api_server(tmp_path / "prefect.log")
    assert server is not None and os.getsid(server.process.pid) == server.process.pid  # its own session: Ctrl-C spares it
    assert "PREFECT_API_URL" not in os.environ  # not yet: it may still be starting
    with socket.socket() as other, pytest.raises(OSError):  # its port is held from the start: no one can take it
        other.bind(("127.0.0.1", server.port))
    assert flow.start_api_server(tmp_path / "prefect.log") is server  # one per process

    flow.use_api_server(server)
    assert os.environ["PREFECT_API_URL"] == server.url == PREFECT_API_URL.value()
    with urllib.request.urlopen(f"{server.url}/health", timeout=30) as answer:
        assert answer.status == 200
    assert not memo.exists()  # it started without importing every Prefect integration to register block types

    server.stop()
    assert server.process.poll() is not None and not flow._configured_api_url()
    assert "PREFECT_API_URL" not in os.environ


def test_a_configured_server_is_used_and_none_is_started(no_api_url, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # a profile's, or prefect.toml's
        assert flow.start_api_server(tmp_path / "prefect.log") is None
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert flow.start_api_server(tmp_path / "prefect.log") is None
    assert not list(tmp_path.iterdir())  # no server, so no log either


def test_a_server_that_cannot_start_is_one_clear_error(no_api_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_REQUEST_TIMEOUT", "soon")  # a bad Prefect setting: the server's import fails
    log = tmp_path / "prefect.log"
    server = flow.start_api_server(log)
    with pytest.raises(SluiceError, match="exited at start") as err:
        flow.use_api_server(server)
    assert str(log) in str(err.value) and "--no-prefect" in str(err.value)
    assert "request_timeout" in log.read_text()  # what went wrong is in the run's Prefect log
    assert "PREFECT_API_URL" not in os.environ


def test_a_dead_server_of_ours_is_replaced_not_pointed_at(no_api_url, tmp_path):
    """Our server killed between two runs of one process (the OOM killer, a stray kill): the next run starts
    another instead of taking the dead one's PREFECT_API_URL for a user's server (Prefect would retry it for
    a minute and a half)."""
    first = flow.start_api_server(tmp_path / "prefect.log")
    flow.use_api_server(first)
    first.process.kill()
    first.process.wait()
    second = flow.start_api_server(tmp_path / "prefect.log")
    assert second is not None and second is not first and second.alive()
    assert "PREFECT_API_URL" not in os.environ and not flow._configured_api_url()
    flow.use_api_server(second)
    assert os.environ["PREFECT_API_URL"] == second.url


def test_sluice_run_starts_the_server_before_the_config_checks_storage(no_api_url, tmp_path, monkeypatch):
    """config.load lists the inputs and probes the release folder (on an object store ~1 s): the server's ~7 s
    start overlaps it. Its log is the run's (<release dir>/<dataset>/.prefect.log); when config.load fails the
    server stops and its folder goes; a config whose fields do not validate starts nothing."""
    from operators.errors import ConfigError
    from pipelines import cli, config

    servers = []

    def load(path, on_error=None):  # stands for a config.load that fails after its storage checks
        servers.append(flow._server if flow._server is not None and flow._server.alive() else None)
        raise ConfigError(f"{path}: stop here")

    monkeypatch.setattr(config, "load", load)
    good = tmp_path / "early.yaml"
    good.write_text("dataset: early\ninputs: [{path: in.jsonl}]\nstages: []\nrelease: {dir: rel}\n")
    assert cli.main(["run", str(good)]) == 2
    assert servers[0] is not None and servers[0].log == tmp_path / "rel" / "early" / flow.PREFECT_LOG
    assert not servers[0].alive() and not (tmp_path / "rel").exists()  # the failed load left nothing behind

    monkeypatch.setattr(flow, "_server", None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: ../escape\ninputs: [{path: in.jsonl}]\nstages: []\n")
    assert cli.main(["run", str(bad)]) == 2 and servers[1] is None
    assert cli.main(["run", "--no-prefect", str(good)]) == 2 and servers[2] is None



def test_a_release_folder_that_cannot_be_made_leaves_the_config_errors_to_config_load(no_api_url, tmp_path, capsys):
    """The server's log goes in the release folder; when a file stands where that folder would be, no server
    starts and config.load reports the config's own problems (a missing input), as it does without Prefect."""
    from pipelines import cli

    (tmp_path / "afile").write_text("not a folder")
    path = tmp_path / "blocked.yaml"
    path.write_text("dataset: blocked\ninputs: [{path: missing.jsonl}]\nstages: []\nrelease: {dir: afile/rel}\n")
    assert cli.main(["run", str(path)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err and flow._server is None

def test_a_run_on_our_server_sends_no_flow_heartbeats(no_api_url, tmp_path, monkeypatch, write_config, alpaca):
    """Heartbeats tell a lasting server that a run died; ours ends with the run, and the flow's end waited up to
    1 s for the heartbeat thread. A user's server (PREFECT_API_URL) keeps them (Prefect's default, 180 s)."""
    import json

    from prefect.settings import get_current_settings

    from pipelines import config

    frequencies = []
    run = flow._run

    def recording(*args):
        frequencies.append(get_current_settings().flows.heartbeat_frequency)
        return run(*args)

    monkeypatch.setattr(flow, "_run", recording)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": row["output"]}) + "\n" for row in alpaca[:200]))
    pipeline = config.load(write_config([{"path": str(data), "fields": {"text": "text"}}], [{"op": "exact_dedup"}]))
    folder, outcome = flow.run_pipeline(pipeline)
    assert frequencies == [None] and outcome.ledger.stages[-1].rows_out > 0


# --- the server's database -----------------------------------------------------------------------------------


def _post(server: flow.ApiServer, path: str, body: dict) -> object:
    request = urllib.request.Request(f"{server.url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def _flows(server: flow.ApiServer) -> set[str]:
    return {f["name"] for f in _post(server, "/flows/filter", {})}


@pytest.fixture
def prefect_home(no_api_url, tmp_path, monkeypatch):
    """A Prefect home (whose prefect.db is Prefect's default database) and a temporary directory of the test's own."""
    home = tmp_path / "prefect-home"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    flow._refresh_prefect_settings()
    return home


def test_a_run_leaves_no_prefect_history_behind(tmp_path, write_config, alpaca):
    """`sluice run`'s server keeps its database in a temporary folder of its own, removed when it stops: nothing
    grows in ~/.prefect. The first server of a Prefect version keeps a copy of its migrated, empty database in
    ~/.cache/sluice for the next ones."""
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": row["output"]}) + "\n" for row in alpaca[:200]))
    config = write_config([{"path": str(data), "fields": {"text": "text"}}], [{"op": "exact_dedup"}])
    home, cache, tmp = tmp_path / "prefect-home", tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PREFECT_HOME": str(home), "XDG_CACHE_HOME": str(cache), "TMPDIR": str(tmp)}
    run = subprocess.run([Path(sys.executable).parent / "sluice", "run", str(config)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "released" in run.stdout, run.stderr
    assert not list(home.rglob("prefect.db*"))  # not in Prefect's default database
    assert not list(tmp.iterdir())  # the run's own is gone with its server
    template = cache / "sluice" / f"prefect-{importlib.metadata.version('prefect')}.db"
    with closing(sqlite3.connect(template)) as database:  # migrated, and empty
        assert database.execute("select count(*) from alembic_version").fetchone() == (1,)
        assert database.execute("select count(*) from flow").fetchone() == (0,)


def test_two_servers_at_once_each_have_a_database_of_their_own(prefect_home, tmp_path):
    """Two runs at once on one machine (two processes: here two servers of one) do not share one SQLite file,
    whose write lock made each wait for the other (up to PREFECT_SERVER_DATABASE_TIMEOUT, 60 s)."""
    first, second = flow.ApiServer(tmp_path / "first.log"), flow.ApiServer(tmp_path / "second.log")
    try:
        first.wait(180)
        second.wait(180)
        _post(first, "/flows/", {"name": "first-run"})
        _post(second, "/flows/", {"name": "second-run"})
        assert _flows(first) == {"first-run"} and _flows(second) == {"second-run"}
        assert first.database.exists() and second.database.exists()
    finally:
        first.stop()
        second.stop()
    assert not first.folder.exists() and not second.folder.exists()


def test_a_database_the_user_configured_is_used(prefect_home, tmp_path, monkeypatch):
    """PREFECT_API_DATABASE_CONNECTION_URL in the active Prefect profile (or the environment, prefect.toml, .env):
    the user keeps the runs' history there, as Prefect's own servers would."""
    mine = tmp_path / "mine.db"
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'active = "mine"\n[profiles.mine]\n'
                        f'PREFECT_API_DATABASE_CONNECTION_URL = "sqlite+aiosqlite:///{mine}"\n')
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    flow._refresh_prefect_settings()
    server = flow.start_api_server(tmp_path / "prefect.log")
    flow.use_api_server(server)
    _post(server, "/flows/", {"name": "kept"})
    assert not server.database.exists()
    with closing(sqlite3.connect(mine)) as database:
        assert database.execute("select name from flow").fetchall() == [("kept",)]
