"""The Batch API path of LLMClient against a loopback /v1/files + /v1/batches server: answers mapped back by
custom_id, typed failures, expiry and 5xx resubmission, resuming a batch after a restart, batch prices."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from batch_server import BatchServer
from conftest import ROOT
from operators.errors import SluiceError
from operators.generate import ChatRequest, EndpointConfig, FailureKind, LLMClient, Magpie, ResponseCache, Responses
from operators.generate.client import BatchConfig, Price

SEEDS = ROOT / "data" / "self_instruct" / "seed_tasks.jsonl"


def client_for(url: str, cache: ResponseCache | None = None, **batch) -> LLMClient:
    endpoint = EndpointConfig(base_url=url, model="gpt-test", max_retries=3, backoff_s=0.01, backoff_max_s=0.05,
                              prices={"gpt-test": Price(prompt=1.0, completion=2.0)},
                              batch=BatchConfig(poll_s=0.01, **batch))
    return LLMClient(endpoint, cache)


def instructions(n: int) -> list[str]:
    return [line for line in pl.read_ndjson(SEEDS)["instruction"].head(n)]


def test_answers_map_back_by_custom_id_with_typed_failures_and_resubmission():
    texts = instructions(30)
    texts[3] += " [fail400]"
    texts[7] += " [fail500]"
    texts[11] += " [expire]"
    requests = [ChatRequest.user(t, tag=str(i)) for i, t in enumerate(texts)] + [ChatRequest.user(texts[0])]
    with BatchServer(flaky={"POST /v1/files": 2, "GET /v1/batches/{id}": 1}) as server:
        client = client_for(server.url)
        answers = client.complete(requests, step="test")
    assert [a.text for a in answers if a.ok] == [f"echo: {t}" for i, t in enumerate(texts + [texts[0]]) if i != 3]
    assert not answers[3].ok and answers[3].kind == FailureKind.BAD_REQUEST and "invalid request" in answers[3].message
    # the 500 and the expired request went out again, alone, in a second batch
    assert server.counts["POST /v1/batches"] == 2 and client.usage.batches == 2
    second = server.files[server.batches["batch_2"]["input_file_id"]].decode().splitlines()
    assert len(second) == 2
    assert client.usage.requests == 30 and client.usage.retries == 3  # the duplicate request was sent once
    assert client.usage.failures == {"bad_request": 1}
    model = client.usage.models["gpt-test"]
    assert model.batch_prompt_tokens == model.prompt_tokens > 0
    full = (model.prompt_tokens * 1.0 + model.completion_tokens * 2.0) / 1e6
    assert client.usage.cost(client.endpoint.prices) == pytest.approx(full / 2)  # batch price: half
    with BatchServer() as server:
        once = client_for(server.url, resubmit=0).complete([ChatRequest.user(texts[7]), ChatRequest.user(texts[11])])
    assert [a.kind for a in once] == [FailureKind.SERVER_ERROR, FailureKind.EXPIRED]


def test_a_batch_in_flight_is_collected_after_a_restart_not_resubmitted(tmp_path):
    requests = [ChatRequest.user(t) for t in instructions(12)]
    cache_path = tmp_path / "cache.sqlite"
    with BatchServer(polls=10_000) as server:
        first = ResponseCache(cache_path)
        with pytest.raises(SluiceError, match=r"batch batch_1 still running .* run again to collect it"):
            client_for(server.url, first, max_wait_s=0.2).complete(requests)
        first.close()  # the process ends here
        server.polls = 0  # the provider finishes the batch meanwhile
        again = ResponseCache(cache_path)
        answers = client_for(server.url, again).complete(requests)
        assert all(a.ok for a in answers) and server.counts["POST /v1/batches"] == 1
        assert server.counts["POST /v1/files"] == 1 and again.open_batches() == {}
        third = client_for(server.url, again)
        assert all(a.cached for a in third.complete(requests)) and third.usage.batches == 0
        again.close()


def test_generators_run_unchanged_through_the_batch_api():
    seeds = pl.read_ndjson(SEEDS).head(8)
    with BatchServer(responder=lambda body: "How do I plant tomatoes in a small garden?" if "prompt" in body
                     else "Water them every morning.") as server:
        client = client_for(server.url)
        answered = Responses().run(seeds, client).kept
        assert len(answered) == 8 and (answered["output"] == "Water them every morning.").all()
        magpie = Magpie(num_rows=3).run(pl.DataFrame({"id": []}, schema={"id": pl.String}), client)
        assert server.batches["batch_2"]["endpoint"] == "/v1/completions"  # the probe, then the other two
        assert server.batches["batch_3"]["endpoint"] == "/v1/completions"
        assert len(magpie.kept) == 1 and dict(magpie.rejected.group_by("reason").len().iter_rows()) == {"duplicate": 2}


def test_the_batch_api_down_is_a_clear_error():
    with BatchServer(flaky={"POST /v1/files": 10}) as server:
        with pytest.raises(SluiceError, match=r"batch API at http://127.0.0.1:\d+/v1: InternalServerError.*after 4 attempt"):
            client_for(server.url).complete([ChatRequest.user("hello")])


def test_a_pipeline_with_the_batch_api_chosen_in_the_config(tmp_path, sluice):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in instructions(4)))
    with BatchServer() as server:
        endpoint = {"base_url": server.url, "model": "gpt-test", "batch": {"poll_s": 0.01},
                    "prices": {"gpt-test": {"prompt": 2.0, "completion": 4.0}}}
        config = tmp_path / "gen.yaml"
        config.write_text(yaml.safe_dump({"dataset": "gen", "inputs": [{"path": "seeds.jsonl", "fields": {"instruction": "instruction"}}],
                                          "endpoint": endpoint, "release": {"dir": "releases"},
                                          "stages": [{"op": "multi_turn", "turns": 2}, {"op": "token_count", "fields": ["messages"]}]}))
        code, out, err = sluice("run", config, "--no-prefect")
        assert code == 0, err
        first = json.loads((tmp_path / "releases" / "gen" / "v0001" / "manifest.json").read_text())["generation"]
        model = first["models"]["gpt-test"]
        assert first["batches"] == 3 and model["fresh_prompt_tokens"] == model["prompt_tokens"] > 0
        assert first["cost"] == pytest.approx((model["prompt_tokens"] * 2.0 + model["completion_tokens"] * 4.0) / 1e6 / 2)
        creates = server.counts["POST /v1/batches"]
        assert creates == 3  # the first answers, the simulated follow-ups, the second answers: one batch per round
        code, _, err = sluice("run", config, "--no-prefect", "--force")  # a re-run: every answer cached, no batch
        assert code == 0 and server.counts["POST /v1/batches"] == creates
    rows = pl.read_parquet(tmp_path / "releases" / "gen" / "v0002" / "data" / "*.parquet")
    assert len(rows) == 4 and rows["turns"].to_list() == [2] * 4 and (rows["tokens"] > 10).all()
    again = json.loads((tmp_path / "releases" / "gen" / "v0002" / "manifest.json").read_text())["generation"]
    assert again["cache_hits"] == again["requests"] == 12 and "batches" not in again and again["fresh_cost"] == 0
    assert again["cost"] == first["cost"]  # what the released rows cost, though this run paid nothing
