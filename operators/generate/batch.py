"""The OpenAI Batch API behind the same `LLMClient.complete`: chosen per endpoint (`endpoint.batch`).

1. Answers already in the response cache cost nothing, as always.
2. A request already submitted in a batch that is still open (recorded in the cache's `batches` table,
   so a process that was stopped or killed finds it again) is collected from that batch, not resubmitted.
3. The rest go out as JSONL (`custom_id` = the request's cache key): upload to /v1/files (purpose "batch"),
   create a /v1/batches job on /v1/chat/completions (or /v1/completions for raw prompts), record it.
4. Poll until each batch ends; download its output and error files; every line is mapped back by
   `custom_id`: a 200 body is an answer (cached, judged like any other), another status a typed failure
   (429 rate_limited, 5xx server_error, other 4xx bad_request). Requests a batch left without a line
   (expired, cancelled, failed) and retryable ones are sent again in a new batch up to `resubmit` times, then
   fail as `expired` (or their last kind).
5. Usage counts the answers' tokens as batch tokens: `cost` prices them at `Price.batch_discount`.

Errors of the files/batches endpoints themselves (5xx, 429, connection) are retried with back-off up to
`endpoint.max_retries`; after that the job stops with a SluiceError (the batches in flight stay recorded).
"""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING, Any

from operators.errors import SluiceError
from operators.generate.cache import CachedAnswer
from operators.generate.failures import RETRYABLE, Failure, FailureKind

if TYPE_CHECKING:
    from operators.generate.client import ChatRequest, Completion, LLMClient

FINAL = {"completed", "failed", "expired", "cancelled"}
WHOLE = "*"  # in a batch's answers: the outcome of every request of a batch that failed as a whole


class BatchRunner:
    def __init__(self, client: LLMClient) -> None:
        self.client = client
        self.config = client.endpoint.batch
        self._api = None

    def complete(self, requests: list[ChatRequest], step: str) -> list[Completion | Failure]:
        c = self.client
        keys = [c.key(r) for r in requests]
        unique = dict(zip(keys, requests))
        results: dict[str, Completion | Failure] = {}
        found = c.cache.get_many(list(unique))
        for key, request in unique.items():
            c.usage.requests += 1
            if (cached := found.get(key)) is not None:
                c.usage.cache_hits += 1
                results[key] = c._judge(key, request, cached, True, step)
        pending = {k: r for k, r in unique.items() if k not in results}
        open_batches = {b: keys & pending.keys() for b, keys in c.cache.open_batches().items()}
        open_batches = {b: keys for b, keys in open_batches.items() if keys}
        last_kind: dict[str, tuple[FailureKind, str]] = {}
        for attempt in range(self.config.resubmit + 1):
            waiting = set().union(*open_batches.values()) if open_batches else set()
            for raw in (False, True):  # one endpoint per batch: chat, or raw text completions
                fresh = [k for k, r in pending.items() if k not in waiting and (r.raw is not None) == raw]
                for start in range(0, len(fresh), self.config.max_requests):
                    part = fresh[start:start + self.config.max_requests]
                    open_batches[self._submit([(k, pending[k]) for k in part])] = set(part)
            for batch_id, answers in self._collect(open_batches).items():
                if WHOLE in answers:  # the batch itself failed (e.g. its input was invalid): every request did
                    answers = dict.fromkeys(open_batches[batch_id], answers[WHOLE])
                for key, outcome in answers.items():
                    if key not in pending:
                        continue
                    if isinstance(outcome, CachedAnswer):
                        c.usage.add_answer(c.model, outcome.prompt_tokens, outcome.completion_tokens, batch=True)
                        c.cache.put(key, outcome)
                        results[key] = c._judge(key, pending.pop(key), outcome, False, step)
                    elif outcome[0] not in RETRYABLE:
                        results[key] = c._fail(key, outcome[0], outcome[1], attempt + 1, pending.pop(key), step)
                    else:
                        last_kind[key] = outcome
                c.cache.close_batch(batch_id)
            open_batches = {}
            if not pending:
                break
        for key, request in pending.items():
            kind, message = last_kind.get(key, (FailureKind.EXPIRED, "no answer in the batch (expired or cancelled)"))
            results[key] = c._fail(key, kind, message, self.config.resubmit + 1, request, step)
        return [results[k] for k in keys]

    # -- the files and batches endpoints ------------------------------------------------------------------

    def _submit(self, items: list[tuple[str, ChatRequest]]) -> str:
        c = self.client
        lines = []
        for key, request in items:
            url, body = (("/v1/chat/completions", c._arguments(request)) if request.raw is None
                         else ("/v1/completions", c._raw_arguments(request)))
            lines.append(json.dumps({"custom_id": key, "method": "POST", "url": url, "body": body}, ensure_ascii=False))
        endpoint = "/v1/completions" if items[0][1].raw is not None else "/v1/chat/completions"
        data = ("\n".join(lines) + "\n").encode()
        uploaded = self._call(lambda api: api.files.create(file=("requests.jsonl", data), purpose="batch"))
        batch = self._call(lambda api: api.batches.create(input_file_id=uploaded.id, endpoint=endpoint,
                                                          completion_window=self.config.completion_window,
                                                          metadata={"source": "sluice"}))
        c.cache.record_batch(batch.id, [k for k, _ in items])
        c.usage.batches += 1
        c.usage.calls += len(items)
        return batch.id

    def _collect(self, batches: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
        """Wait for every batch to end; per batch, custom_id -> CachedAnswer or (kind, message)."""
        started, done = time.monotonic(), {}
        while len(done) < len(batches):
            for batch_id in batches:
                if batch_id in done:
                    continue
                batch = self._call(lambda api, b=batch_id: api.batches.retrieve(b))
                if batch.status in FINAL:
                    done[batch_id] = self._read(batch)
            if len(done) == len(batches):
                break
            waited = time.monotonic() - started
            if self.config.max_wait_s is not None and waited >= self.config.max_wait_s:
                waiting = ", ".join(b for b in batches if b not in done)
                raise SluiceError(f"batch {waiting} still running after {waited:.0f} s (batch.max_wait_s); it stays "
                                  "recorded in the response cache: run again to collect it without resubmitting")
            time.sleep(self.config.poll_s)
        return done

    def _read(self, batch: Any) -> dict[str, Any]:
        answers: dict[str, Any] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            text = self._call(lambda api, f=file_id: api.files.content(f).text)
            for line in text.splitlines():
                if line.strip():
                    record = json.loads(line)
                    answers[record.get("custom_id")] = _outcome(record)
        if batch.status == "failed" and not answers:
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            message = "; ".join(getattr(e, "message", "") or "" for e in errors)[:200]
            return {WHOLE: (FailureKind.BAD_REQUEST, f"batch {batch.id} failed: {message or 'no reason given'}")}
        return answers  # an expired or cancelled batch: the requests it did not answer are missing here

    def _call(self, action):
        """One files/batches call, retried on 5xx, 429 and transport errors."""
        import openai

        from operators.generate.client import _classify

        if self._api is None:
            self._api = openai.OpenAI(base_url=self.client.base_url or self.client._connect(),
                                      api_key=self.client._api_key, max_retries=0, timeout=self.client.endpoint.timeout_s)
        ep = self.client.endpoint
        for attempt in range(1, ep.max_retries + 2):
            try:
                return action(self._api)
            except Exception as err:  # noqa: BLE001  typed below
                kind, message, retry_after = _classify(err)
                if kind not in RETRYABLE or attempt > ep.max_retries:
                    raise SluiceError(f"batch API at {self.client.base_url}: {message} (after {attempt} attempt(s)); "
                                      "batches already submitted stay recorded in the response cache") from None
                self.client.usage.retries += 1
                time.sleep(max(retry_after or 0, random.uniform(0, min(ep.backoff_max_s, ep.backoff_s * 2 ** (attempt - 1)))))
        raise AssertionError("unreachable")


def _outcome(record: dict) -> CachedAnswer | tuple[FailureKind, str]:
    """One line of an output or error file -> an answer or (kind, message)."""
    response = record.get("response") or {}
    status, body = response.get("status_code"), response.get("body") or {}
    error = record.get("error") or (body.get("error") if isinstance(body, dict) else None)
    if status == 200 and isinstance(body, dict) and body.get("choices"):
        choice, usage = body["choices"][0], body.get("usage") or {}
        message = choice.get("message")
        return CachedAnswer(content=(message.get("content") if message else choice.get("text")) or "",
                            finish_reason=choice.get("finish_reason") or "stop",
                            refusal=message.get("refusal") if message else None, model=body.get("model") or "",
                            prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0))
    text = json.dumps(error)[:200] if error else f"status {status}"
    if status == 429:
        return FailureKind.RATE_LIMITED, text
    if status is None or status >= 500 or status in (408, 409):
        return FailureKind.SERVER_ERROR, text
    return FailureKind.BAD_REQUEST, text
