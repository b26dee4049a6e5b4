"""Secrets: a planted API key reaches the LLM server (so the test is not vacuous) and appears in no output:
generated rows, rejects (failed requests among them), the LLM response cache (SQLite + WAL), the release
(manifest, card, report, shards, rejects, shard cache), stdout and stderr, and the messages of failed calls
and failed runs, even when the server echoes the key back in its error body, as real providers do."""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
from pathlib import Path

import polars as pl
import yaml

from fault_server import FaultServer
from test_generate_operators import held_out

KEY = "sk-planted-" + secrets.token_hex(16)


class KeyEchoServer(FaultServer):
    """The fault server, plus `[401echo]`: a 401 whose body quotes the Authorization header it got."""

    def __init__(self) -> None:
        super().__init__()
        self.authorizations: set[str] = set()

    async def _answer(self, request_line: str, headers: dict[str, str], body: dict,
                      writer: asyncio.StreamWriter) -> bool:
        self.authorizations.add(headers.get("authorization", ""))
        if "[401echo]" in json.dumps(body.get("messages", [])):
            message = f"Incorrect API key provided: {headers.get('authorization', '').removeprefix('Bearer ')}"
            self._send(writer, 401, json.dumps({"error": {"message": message, "code": "invalid_api_key"}}))
            return True
        return await self._respond(request_line, body, writer)


def readable(path: Path) -> bytes:
    """A file's bytes as a reader sees them: Parquet (compressed pages) as its rows, gzip decompressed."""
    if path.suffix == ".parquet":
        return pl.read_parquet(path).write_ndjson().encode()
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    return path.read_bytes()


def outputs_holding_the_key(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and KEY.encode() in readable(p)]


def test_the_api_key_appears_in_no_output_of_a_generation_and_release_run(tmp_path, sluice, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    seeds = [{"instruction": t} for t in held_out(4)] + [{"instruction": "who am I? [401echo]"},
                                                         {"instruction": "flaky [500]"}]
    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps(s) + "\n" for s in seeds))
    printed = []
    with KeyEchoServer() as server:
        gen = tmp_path / "gen.yaml"
        gen.write_text(yaml.safe_dump({
            "dataset": "generated", "endpoint": {"base_url": server.url, "model": "m", "max_retries": 1, "backoff_s": 0.01},
            "inputs": [{"path": "seeds.jsonl", "fields": {"instruction": "instruction"}}],
            "stages": [{"op": "responses"}, {"op": "normalize", "fields": ["output"]},
                       {"op": "length_filter", "field": "output", "min_words": 3},
                       {"op": "exact_dedup", "fields": ["output"]}],
            "release": {"dir": "releases"}}))
        code, stdout, stderr = sluice("run", gen, "--no-prefect")
        printed += [stdout, stderr]
        assert code == 0, stderr
        assert f"Bearer {KEY}" in server.authorizations  # the key was really sent

        # the same job against a server that is not there: a failing run's messages
        broken = tmp_path / "broken.yaml"
        broken.write_text(gen.read_text().replace(server.url, "http://127.0.0.1:9/v1").replace("generated", "broken"))
        code, stdout, stderr = sluice("run", broken, "--no-prefect")
        printed += [stdout, stderr]

    manifest = json.loads((tmp_path / "releases" / "generated" / "v0001" / "manifest.json").read_text())
    assert manifest["generation"]["failures"] == {"bad_request": 1, "server_error": 1}  # the echoing 401 was recorded

    # a failing run (its input gone): the error message
    (tmp_path / "seeds.jsonl").rename(tmp_path / "moved.jsonl")
    code, stdout, stderr = sluice("run", gen, "--no-prefect")
    assert code == 2
    printed += [stdout, stderr]

    outputs = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(outputs) > 15 and any(p.suffix == ".sqlite" for p in outputs)
    assert any(".cache" in p.parts for p in outputs) and any(p.name == "report.html" for p in outputs)
    assert outputs_holding_the_key(tmp_path) == []
    assert not [text for text in printed if KEY in text]


def test_credentials_in_the_endpoint_url_stay_out_of_the_generation_report():
    from pipelines.generation import public_url

    assert public_url(f"https://proxy-user:{KEY}@llm.example.com:8443/v1?api-key={KEY}") == "https://llm.example.com:8443/v1"
    assert public_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
