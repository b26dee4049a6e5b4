"""The LLM client against a real HTTP server on loopback that misbehaves on demand (tests/fault_server.py)."""

from __future__ import annotations

import time

import pytest

from fault_server import FaultServer
from operators.generate import ChatRequest, EndpointConfig, FailureKind, LLMClient, ResponseCache, failures_frame
from operators.generate.client import parse_json


def client_for(server: FaultServer, cache: ResponseCache | None = None, **endpoint) -> LLMClient:
    settings = {"base_url": server.url, "model": "test-model", "timeout_s": 1.0, "max_retries": 3,
                "backoff_s": 0.01} | endpoint
    return LLMClient(EndpointConfig(**settings), cache)


def test_every_fault_is_typed_counted_and_retried_a_bounded_number_of_times():
    prompts = {
        "fine": None, "transient 429 [429x2@0.05]": None, "transient 500 [500x1]": None,
        "always 500 [500]": FailureKind.SERVER_ERROR, "always 429 [429]": FailureKind.RATE_LIMITED,
        "slow [slow@3]": FailureKind.TIMEOUT, "dropped [drop]": FailureKind.TRANSPORT,
        "cut body [cutbody]": FailureKind.TRANSPORT, "not json [badjson]": FailureKind.SERVER_ERROR,
        "cut off [length]": FailureKind.TRUNCATED, "declined [refuse]": FailureKind.REFUSAL,
    }
    with FaultServer() as server:
        client = client_for(server)
        answers = client.complete([ChatRequest.user(p, tag=p) for p in prompts])
    for (prompt, expected), answer in zip(prompts.items(), answers):
        if expected is None:
            assert answer.ok and answer.text == f"echo: {prompt}"
        else:
            assert not answer.ok and answer.kind == expected and answer.tag == prompt, prompt
    # transient faults were retried until they passed; permanent ones exactly 1 + max_retries times
    assert server.attempts["transient 429 [429x2@0.05]"] == 3 and server.attempts["transient 500 [500x1]"] == 2
    for prompt in ("always 500 [500]", "always 429 [429]", "dropped [drop]", "not json [badjson]"):
        assert server.attempts[prompt] == 4, prompt
    # answers that are final (truncated, refused) are not retried
    assert server.attempts["cut off [length]"] == 1 and server.attempts["declined [refuse]"] == 1
    usage = client.usage.to_json()
    assert usage["failures"] == {"rate_limited": 1, "refusal": 1, "server_error": 2, "timeout": 1, "transport": 2,
                                 "truncated": 1}
    assert usage["calls"] == sum(server.attempts.values()) and usage["requests"] == len(prompts)
    table = failures_frame(client.failures)
    assert len(table) == 8 and table["request_hash"].str.len_chars().to_list() == [64] * 8
    assert table.filter(table["kind"] == "timeout")["attempts"].to_list() == [4]


def test_retry_after_is_honoured_and_concurrency_is_capped_and_halved():
    with FaultServer() as server:
        client = client_for(server, max_concurrency=3)
        started = time.monotonic()
        answers = client.complete([ChatRequest.user(f"q{k} [slow@0.2]") for k in range(9)])
        assert all(a.ok for a in answers) and server.max_in_flight == 3
        assert client.limit == 3.0
        started = time.monotonic()
        assert client.complete([ChatRequest.user("wait [429x1@0.6]")])[0].ok
        assert time.monotonic() - started >= 0.6
        assert client.limit == pytest.approx(1.5 + 1 / 1.5)  # halved on the 429, then +1/limit on the success


def test_cache_makes_a_rerun_free_and_identical_requests_are_sent_once(tmp_path):
    requests = [ChatRequest.user(f"question {k}") for k in range(20)] + [ChatRequest.user("question 0")]
    with FaultServer() as server:
        first = client_for(server, ResponseCache(tmp_path / "cache.sqlite"))
        answers = first.complete(requests)
        assert server.calls == 20 and answers[0] == answers[-1]
        first.cache.close()
        again = client_for(server, ResponseCache(tmp_path / "cache.sqlite"))
        replay = again.complete(requests)
        assert server.calls == 20, "a finished job re-run makes zero calls"
        assert [a.text for a in replay] == [a.text for a in answers] and all(a.cached for a in replay)
        assert again.usage.cache_hits == 20 and again.usage.calls == 0
        # a new request (a row added to the job) costs exactly one call; the old ones stay cached
        again.complete(requests + [ChatRequest.user("question 20")])
        assert server.calls == 21


def test_failures_are_not_cached_but_final_answers_are(tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    requests = [ChatRequest.user("[500]"), ChatRequest.user("[length]"), ChatRequest.user("ok")]
    with FaultServer() as server:
        client_for(server, cache, max_retries=0).complete(requests)
        assert server.calls == 3 and len(cache) == 2  # the truncated answer is kept: the same request repeats it
        client_for(server, cache, max_retries=0).complete(requests)
        assert server.calls == 4  # only the 500 is asked again


def test_cache_key_covers_what_decides_the_answer_and_not_the_tag():
    with FaultServer() as server:
        client = client_for(server)
        base = ChatRequest.user("same", tag="row-1")
        assert client.key(base) == client.key(ChatRequest.user("same", tag="row-2"))
        for changed in (ChatRequest.user("same", seed=1), ChatRequest.user("same", temperature=0.1),
                        ChatRequest.user("same", max_tokens=7), ChatRequest.user("same", system="be brief"),
                        ChatRequest.user("same", json_schema={"type": "object"})):
            assert client.key(changed) != client.key(base)
        other_model = LLMClient(EndpointConfig(base_url=server.url, model="other"))
        assert other_model.key(base) != client.key(base)


def test_json_answers_parse_tolerantly_or_fail_as_parse_error():
    assert parse_json('Sure! ```json\n{"score": 4}\n``` hope it helps') == {"score": 4}
    assert parse_json('The result is {"score": 2, "why": "ok"} as asked.') == {"score": 2, "why": "ok"}
    assert parse_json("[1, 2]") == [1, 2] and parse_json("no json here") is None
    with FaultServer() as server:
        answers = client_for(server).complete([
            ChatRequest.user('say {"a": 1}', json_schema={"type": "object"}),
            ChatRequest.user("say nothing useful", json_schema={"type": "object"}),
        ])
    assert answers[0].data == {"a": 1}
    assert answers[1].kind == FailureKind.PARSE_ERROR


def test_usage_and_cost_per_model():
    with FaultServer() as server:
        client = client_for(server, prices={"test-model": {"prompt": 1.0, "completion": 2.0}})
        client.complete([ChatRequest.user("one two three"), ChatRequest.user("four five")])
    usage = client.usage.to_json(client.endpoint.prices)
    # the fault server counts words: prompts 3 + 2, completions "echo: ..." 4 + 3
    assert usage["models"] == {"test-model": {"prompt_tokens": 5, "completion_tokens": 7, "calls": 2}}
    assert usage["cost"] == pytest.approx((5 * 1.0 + 7 * 2.0) / 1e6)


def test_missing_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="no LLM endpoint"):
        LLMClient(EndpointConfig(model="x"))


def test_requests_per_minute_window_spans_batches():
    with FaultServer() as server:
        client = client_for(server, requests_per_minute=3)
        assert all(a.ok for a in client.complete([ChatRequest.user(f"r{k}") for k in range(3)]))
        # the window is full: the next request waits until the oldest is a minute old (here: made 59.7 s old)
        client.window[0] = (time.monotonic() - 59.7, client.window[0][1])
        started = time.monotonic()
        assert client.complete([ChatRequest.user("r3")])[0].ok
        assert 0.1 < time.monotonic() - started < 5
