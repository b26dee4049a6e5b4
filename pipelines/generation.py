"""Generator stages' LLM endpoint: one client per run, a view of it per task, and what the rows cost.

A pipeline whose stages include a generator (self_instruct, responses, judge, ...) opens an `LLMRun`: the
endpoint of the config's `endpoint:` (or OPENAI_BASE_URL / SLUICE_MODEL), else the embedded local model,
which starts on the first request the response cache cannot answer (a re-run answered from the cache starts
nothing). Every answer goes to the response cache (SQLite; default `<release dir>/<dataset>/llm-cache.sqlite`)
as soon as it arrives, so a killed run resumes with only the missing calls, and a finished generator task's
rows are in the shard cache like any stage's.

Each generator task gets a `TaskClient`: the run's client, counting the requests of that task (fresh calls
and cache hits apart, with their tokens). Those tallies are cached with the task's rows, so a release built
from cached results still records the tokens and cost behind its rows (`release_usage`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from operators.errors import ConfigError
from operators.generate import EndpointConfig, LLMClient, ResponseCache
from operators.generate.cache import CachedAnswer
from operators.generate.client import ChatRequest, Price
from pipelines import failpoints
from pipelines.local_model import MODEL_NAME, LocalModel, LocalModelConfig

# One row per model a task's requests went to. "fresh": answered by a call in that task; "cached": answered
# from the response cache, or the whole task's result came from the shard cache.
TALLY = {"model": pl.String, "fresh_requests": pl.Int64, "fresh_prompt_tokens": pl.Int64,
         "fresh_completion_tokens": pl.Int64, "cached_requests": pl.Int64, "cached_prompt_tokens": pl.Int64,
         "cached_completion_tokens": pl.Int64}


class LLMRun:
    """The run's client and where its answers are cached; `task_client()` for each generator task."""

    def __init__(self, client: LLMClient, local: bool) -> None:
        self.client, self.local = client, local
        self.identity = f"{client.identity}|{client.model}"

    def task_client(self) -> TaskClient:
        return TaskClient(self.client)

    @property
    def endpoint(self) -> dict[str, Any]:
        return {"base_url": "embedded" if self.local else public_url(self.client.base_url or ""),
                "model": self.client.model, "local": self.local}


@contextmanager
def llm_run(endpoint: EndpointConfig | None, local_model: LocalModelConfig, cache_path: Path) -> Iterator[LLMRun]:
    """Open the run's client (the embedded model starts only when a request needs it); close it at the end."""
    endpoint = endpoint or EndpointConfig()
    with ExitStack() as stack:
        cache = _Cache(cache_path)
        stack.callback(cache.close)
        if endpoint.resolved_base_url():
            if not endpoint.resolved_model():
                raise ConfigError("endpoint.model is not set (nor SLUICE_MODEL)")
            yield LLMRun(stack.enter_context(LLMClient(endpoint, cache)), False)
            return

        def start() -> str:  # on the first request the cache cannot answer
            print(f"no endpoint configured: starting the embedded model ({MODEL_NAME})", flush=True)
            return stack.enter_context(LocalModel(local_model))

        # a slow CPU model under load: a timed-out request keeps its slot busy, so a retry only adds work
        local = endpoint.model_copy(update={"model": MODEL_NAME, "timeout_s": max(endpoint.timeout_s, 900),
                                            "max_concurrency": min(endpoint.max_concurrency, local_model.parallel)})
        client = LLMClient(local, cache, identity=f"local:{MODEL_NAME}", connect=start)
        yield LLMRun(stack.enter_context(client), True)


class _Cache(ResponseCache):
    """The response cache, with the crash-test point `llm.cached` right after an answer is committed."""

    def put(self, key: str, answer: CachedAnswer) -> None:
        super().put(key, answer)
        failpoints.hit("llm.cached")


class TaskClient:
    """The run's client as one task sees it: requests go through it (same cache, limits, usage), and this
    task's requests are tallied, fresh calls and cache hits apart, with the tokens of each answer."""

    def __init__(self, client: LLMClient) -> None:
        self._client = client
        self._tally: dict[str, dict[str, int]] = {}
        self.unanswered = 0  # requests that failed without an answer (a re-run asks again)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def complete(self, requests: list[ChatRequest], step: str = "") -> list:
        cache = self._client.cache
        keys = list(dict.fromkeys(self._client.key(r) for r in requests))
        cached = {k for k in keys if cache.get(k) is not None}
        answers = self._client.complete(requests, step)
        for key in keys:
            if (answer := cache.get(key)) is None:  # failed without an answer (transport, 5xx after retries)
                self.unanswered += 1
                continue
            kind = "cached" if key in cached else "fresh"
            counts = self._tally.setdefault(self._client.model, dict.fromkeys(list(TALLY)[1:], 0))
            counts[f"{kind}_requests"] += 1
            counts[f"{kind}_prompt_tokens"] += answer.prompt_tokens
            counts[f"{kind}_completion_tokens"] += answer.completion_tokens
        return answers

    def usage_frame(self) -> pl.DataFrame:
        return pl.DataFrame([{"model": m} | c for m, c in sorted(self._tally.items())], schema=TALLY)


def release_usage(tallies: list[tuple[pl.DataFrame, bool]], run: LLMRun | None) -> dict[str, Any] | None:
    """The manifest's `generation`: per model, the requests and tokens behind the released rows (fresh calls
    of this run and cached answers apart) and their cost at the configured prices; this run's calls,
    retries and failures; the endpoint (without credentials)."""
    if not tallies:
        return None
    frames = [_all_cached(frame) if reused else frame for frame, reused in tallies]
    totals = pl.concat(frames).group_by("model").sum().sort("model") if frames else pl.DataFrame(schema=TALLY)
    endpoint = run.client.endpoint if run else None
    prices = endpoint.prices if endpoint else {}
    batch = endpoint is not None and endpoint.batch is not None  # every request of this endpoint goes by batch
    models = {}
    for row in totals.iter_rows(named=True):
        model = row.pop("model")
        counts = {"requests": row["fresh_requests"] + row["cached_requests"],
                  "prompt_tokens": row["fresh_prompt_tokens"] + row["cached_prompt_tokens"],
                  "completion_tokens": row["fresh_completion_tokens"] + row["cached_completion_tokens"]} | row
        if (price := prices.get(model)) is not None:
            counts["cost"] = _cost(price, counts["prompt_tokens"], counts["completion_tokens"], batch)
            counts["fresh_cost"] = _cost(price, row["fresh_prompt_tokens"], row["fresh_completion_tokens"], batch)
        models[model] = counts
    usage: dict[str, Any] = {"requests": sum(m["requests"] for m in models.values()),
                             "cache_hits": sum(m["cached_requests"] for m in models.values())}
    if run is not None:
        mine = run.client.usage
        usage |= {"calls": mine.calls, "retries": mine.retries, "failures": dict(sorted(mine.failures.items())),
                  "endpoint": run.endpoint}
        if mine.batches:
            usage["batches"] = mine.batches
    if prices:
        usage["cost"] = round(sum(m.get("cost", 0.0) for m in models.values()), 6)
        usage["fresh_cost"] = round(sum(m.get("fresh_cost", 0.0) for m in models.values()), 6)
    usage["models"] = models
    return usage


def _all_cached(frame: pl.DataFrame) -> pl.DataFrame:
    """A task whose result came from the shard cache: all its requests count as answered from the cache."""
    moved = [(pl.col(f"cached_{what}") + pl.col(f"fresh_{what}")).alias(f"cached_{what}")
             for what in ("requests", "prompt_tokens", "completion_tokens")]
    zeros = [pl.lit(0, pl.Int64).alias(f"fresh_{what}") for what in ("requests", "prompt_tokens", "completion_tokens")]
    return frame.with_columns(moved + zeros).select(list(TALLY))


def _cost(price: Price, prompt_tokens: int, completion_tokens: int, batch: bool) -> float:
    share = price.batch_discount if batch else 1.0
    return round((prompt_tokens * price.prompt + completion_tokens * price.completion) * share / 1e6, 6)


def public_url(url: str) -> str:
    """The endpoint as reports show it: without credentials in the user part or the query (`?api-key=`)."""
    parts = urllib.parse.urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
