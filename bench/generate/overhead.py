"""Sluice's own CPU per request, without HTTP: LLMClient against an in-process fake of the openai client
(answers after 1 ms), 5,000 requests at 128 concurrency, with an in-memory and an on-disk response cache.

    .venv/bin/python bench/generate/overhead.py

What it prints is the client's own work per request (key, cache lookup and commit, limiter, typing, usage),
the part that adds to bare `openai`'s ~5-7 ms of CPU per request measured by bench_peers.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from operators.generate import ChatRequest, EndpointConfig, LLMClient, ResponseCache  # noqa: E402


class FakeOpenAI:
    def __init__(self) -> None:
        self.chat = types.SimpleNamespace(completions=types.SimpleNamespace(create=self.create))

    async def create(self, **kwargs):
        await asyncio.sleep(0.001)
        message = types.SimpleNamespace(content="echo " + kwargs["messages"][-1]["content"], refusal=None)
        return types.SimpleNamespace(choices=[types.SimpleNamespace(message=message, finish_reason="stop")], model="m",
                                     usage=types.SimpleNamespace(prompt_tokens=5, completion_tokens=7))


def main(n: int = 5000) -> None:
    for on_disk in (False, True):
        path = Path(tempfile.mkdtemp()) / "cache.sqlite" if on_disk else None
        client = LLMClient(EndpointConfig(base_url="http://fake/v1", model="m", max_concurrency=128), ResponseCache(path))
        client._api = FakeOpenAI()
        requests = [ChatRequest.user(f"[{time.time()}] sentence {k}", max_tokens=64) for k in range(n)]
        started = time.process_time()
        asyncio.run(client._complete(requests, ""))
        cpu = time.process_time() - started
        print(f"cache {'on disk' if on_disk else 'in memory'}: {1000 * cpu / n:.2f} ms CPU per request")
        if path:
            client.cache.close()
            for f in path.parent.iterdir():
                os.unlink(f)


if __name__ == "__main__":
    main()
