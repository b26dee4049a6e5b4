"""Client overhead and saturation: Sluice's LLMClient vs a plain asyncio.gather of raw `openai` calls.

    .venv/bin/python bench/generate/bench_client.py zero  [--requests 2000] [--concurrency 32]
    .venv/bin/python bench/generate/bench_client.py local [--requests 32]   [--concurrency 4] [--max-tokens 48]

`zero`: a zero-latency OpenAI-compatible server on loopback (tests/fault_server.py, its own process) pinned
to core 1, the client pinned to core 0 (one core each): requests/s, and requests per CPU-second of the client process
(the client's own capacity on one core, whatever the server or a busy machine allows).
`local`: the embedded SmolLM2-135M server (llama.cpp); the same prompts through both clients, each prompt
made unique per run so nothing is cached. Both clients alternate runs (raw, sluice, raw, sluice, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from operators.generate import ChatRequest, EndpointConfig, LLMClient, ResponseCache  # noqa: E402


def prompts(n: int, tag: str) -> list[str]:
    return [f"[{tag}] Write one sentence about the number {k}." for k in range(n)]


def raw_gather(base_url: str, model: str, texts: list[str], concurrency: int, max_tokens: int) -> float:
    async def main() -> float:
        api = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=600)
        gate = asyncio.Semaphore(concurrency)

        async def one(text: str):
            async with gate:
                return await api.chat.completions.create(model=model, max_tokens=max_tokens, temperature=0.7,
                                                         seed=0, messages=[{"role": "user", "content": text}])

        await one("warm-up")
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(t) for t in texts))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await api.close()
        return elapsed, cpu

    return asyncio.run(main())


def sluice_client(base_url: str, model: str, texts: list[str], concurrency: int, max_tokens: int, cache: Path) -> float:
    client = LLMClient(EndpointConfig(base_url=base_url, model=model, max_concurrency=concurrency, timeout_s=600),
                       ResponseCache(cache))
    client.complete([ChatRequest.user("warm-up " + str(time.time()), max_tokens=max_tokens)])
    started, cpu = time.perf_counter(), time.process_time()
    answers = client.complete([ChatRequest.user(t, max_tokens=max_tokens, temperature=0.7) for t in texts])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    client.close()
    failed = [a for a in answers if not a.ok and a.kind != "truncated"]
    assert not failed, failed[:3]
    return elapsed, cpu


def run(label: str, base_url: str, model: str, args: argparse.Namespace, out: Path) -> None:
    results = {"raw openai + asyncio.gather": [], "sluice LLMClient (cache on)": []}
    for rep in range(args.repeats):
        tag = f"{time.time_ns()}"
        results["raw openai + asyncio.gather"].append(
            raw_gather(base_url, model, prompts(args.requests, "raw" + tag), args.concurrency, args.max_tokens))
        results["sluice LLMClient (cache on)"].append(
            sluice_client(base_url, model, prompts(args.requests, "slc" + tag), args.concurrency, args.max_tokens,
                          out / f"cache-{tag}.sqlite"))
    rows = {name: {"best_s": round(min(w for w, _ in t), 2), "req_per_s": round(args.requests / min(w for w, _ in t), 1),
                   "req_per_client_cpu_s": round(args.requests / min(c for _, c in t), 1),
                   "runs_s": [round(w, 2) for w, _ in t]}
            for name, t in results.items()}
    raw, ours = (rows[k]["req_per_s"] for k in results)
    report = {"bench": label, "requests": args.requests, "concurrency": args.concurrency,
              "max_tokens": args.max_tokens, "results": rows, "sluice_vs_raw": round(ours / raw, 3)}
    print(json.dumps(report, indent=2))
    (out / f"client_{label}.json").write_text(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target", choices=["zero", "local"])
    parser.add_argument("--requests", type=int)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = ROOT / "bench" / "out" / "generate"
    out.mkdir(parents=True, exist_ok=True)
    if args.target == "zero":
        args.requests, args.concurrency = args.requests or 2000, args.concurrency or 32
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {0})
        server = subprocess.Popen(["taskset", "-c", "1", sys.executable, str(ROOT / "tests" / "fault_server.py"), "18931"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            server.stdout.readline()
            run("zero", "http://127.0.0.1:18931/v1", "zero", args, out)
        finally:
            server.terminate()
    else:
        from pipelines.local_model import MODEL_NAME, LocalModel, LocalModelConfig

        args.requests, args.concurrency = args.requests or 32, args.concurrency or 4
        with LocalModel(LocalModelConfig(parallel=args.concurrency)) as base_url:
            run("local", base_url, MODEL_NAME, args, out)


if __name__ == "__main__":
    main()
