"""Magpie and UltraFeedback rows from Sluice and from distilabel, side by side on the same server.

    .venv/bin/python bench/generate/side_by_side.py magpie --distilabel /tmp/venv17-distilabel/bin/python
    .venv/bin/python bench/generate/side_by_side.py ultrafeedback --distilabel /tmp/venv17-distilabel/bin/python

magpie: the embedded SmolLM2-135M (llama.cpp, raw /v1/completions). Sluice's `magpie` vs distilabel's `Magpie`
task on `ClientvLLM` (its OpenAI-compatible completions client; it applies the chat template with
`transformers`, given a folder with the tokenizer.json Sluice builds from the GGUF and the GGUF's chat template).
ultrafeedback: a scripted loopback server (tests/fault_server.py) that rates each text the same way whichever
prompt format asks (a 135M model cannot follow either rubric), so the two tools' rows can be compared value for
value: Sluice's `ultrafeedback` (4 aspects, responses given) vs distilabel's `UltraFeedback` once per aspect.
Inputs: 8 Alpaca instructions, each with its own answer and two answers to other instructions.
Results: bench/out/generate/side_by_side_{magpie,ultrafeedback}.json (rows of both, requests per row).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "out" / "generate"
ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
ASPECTS = ["helpfulness", "honesty", "instruction-following", "truthfulness"]

DISTILABEL_MAGPIE = r'''
import json, sys
from distilabel.models.llms import ClientvLLM
from distilabel.steps.tasks import Magpie
calls = 0
original = ClientvLLM.agenerate
async def counted(self, *a, **k):
    global calls
    calls += 1
    return await original(self, *a, **k)
ClientvLLM.agenerate = counted
url, tokenizer, n, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = ClientvLLM(base_url=url, tokenizer=tokenizer, magpie_pre_query_template="<|im_start|>user\n",
                 generation_kwargs={"max_new_tokens": max_tokens, "temperature": 1.0, "top_p": 1.0}, timeout=900)
task = Magpie(llm=llm, n_turns=1, only_instruction=False)
task.load()
rows = next(task.process([{} for _ in range(n)]))
print(json.dumps({"rows": rows, "requests": calls}, default=str))
'''

DISTILABEL_ULTRAFEEDBACK = r'''
import json, sys
from distilabel.models.llms import OpenAILLM
from distilabel.steps.tasks import UltraFeedback
url, inputs = sys.argv[1], json.loads(open(sys.argv[2]).read())
llm = OpenAILLM(model="scripted", base_url=url, api_key="x", generation_kwargs={"max_new_tokens": 512, "temperature": 0})
out, calls = {}, 0
for aspect in ["helpfulness", "honesty", "instruction-following", "truthfulness"]:
    task = UltraFeedback(llm=llm, aspect=aspect)
    task.load()
    out[aspect] = next(task.process([dict(r) for r in inputs]))
    calls += len(inputs)
print(json.dumps({"rows": out, "requests": calls}, default=str))
'''


def alpaca_inputs(n: int = 8) -> list[dict]:
    rows = [r for r in json.loads(ALPACA.read_text()) if not r["input"] and "\n" not in r["output"]][:3 * n]
    return [{"instruction": rows[i]["instruction"],
             "generations": [rows[i]["output"], rows[n + i]["output"], rows[2 * n + i]["output"]]} for i in range(n)]


def rating(text: str, aspect: str) -> int:
    """The scripted judge: the same rating for a text and aspect whichever tool asks."""
    return (len(text) + len(aspect.replace("_", "-"))) % 5 + 1


def scripted(messages: list[dict], body: dict) -> str:
    prompt = messages[-1]["content"]
    if prompt.startswith("Rate "):  # Sluice: JSON, responses between <response k> tags
        texts = re.findall(r"<response \d+>\n(.*?)\n</response", prompt, re.DOTALL)
        aspect = re.search(r"Aspect: ([a-z ]+)\.", prompt).group(1).replace(" ", "-")
        return json.dumps({"ratings": [{"rating": rating(t, aspect), "rationale": "scripted"} for t in texts]})
    texts = re.findall(r"^<text \d+> (.*)$", prompt.split("## Annotation", 1)[1], re.MULTILINE)
    aspect = next(a for a in ASPECTS if a.replace("-", " ") in prompt.lower().split("## annotation")[0]
                  or a in prompt.lower().split("## annotation")[0])
    typed = aspect in ("helpfulness", "truthfulness")
    return "\n\n".join(f"#### Output for Text {k}\n" + ("Type: None\nRationale: scripted\n" if typed else "")
                       + f"Rating: {rating(t, aspect)}\nRationale: scripted" for k, t in enumerate(texts, 1))


def ultrafeedback(distilabel: str) -> dict:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    import polars as pl
    from fault_server import FaultServer
    from operators.generate import EndpointConfig, LLMClient, UltraFeedback

    inputs = alpaca_inputs()
    with FaultServer(scripted) as server:
        client = LLMClient(EndpointConfig(base_url=server.url, model="scripted", max_retries=0, json_mode="none"))
        seeds = pl.DataFrame({"id": [f"a{i}" for i in range(len(inputs))], "instruction": [r["instruction"] for r in inputs],
                              "input": [""] * len(inputs), "answers": [r["generations"] for r in inputs]})
        split = UltraFeedback(responses_field="answers", min_margin=0).run(seeds, client)
        ours = pl.concat([split.kept, split.rejected], how="diagonal").sort("prompt")
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(inputs, f)
        done = subprocess.run([distilabel, "-c", DISTILABEL_ULTRAFEEDBACK, server.url, f.name], capture_output=True,
                              text=True, timeout=600)
    theirs = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-2000:]}
    agree = []
    if "rows" in theirs:
        for i, r in enumerate(inputs):
            mine = ours.filter(pl.col("prompt") == r["instruction"]).row(0, named=True)
            for aspect in ASPECTS:
                their = theirs["rows"][aspect][i]["ratings"]
                agree.append(mine[f"ratings_{aspect.replace('-', '_')}"] == their)
    return {"inputs": len(inputs), "sluice": {"requests": client.usage.requests, "requests_per_row": client.usage.requests / len(inputs),
                                              "columns": ours.columns, "first_row": ours.row(0, named=True)},
            "distilabel": {"requests": theirs.get("requests"), "requests_per_row": (theirs.get("requests") or 0) / len(inputs),
                           "columns": sorted(theirs["rows"]["helpfulness"][0]) if "rows" in theirs else None,
                           "first_row": {a: theirs["rows"][a][0] for a in ASPECTS} if "rows" in theirs else theirs},
            "ratings_equal": f"{sum(agree)} of {len(agree)} (instruction, aspect) rating lists"}


def magpie(distilabel: str, n: int, max_tokens: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import polars as pl
    from operators.generate import EndpointConfig, LLMClient, Magpie
    from operators.tokens import embedded_gguf, gguf_metadata, load_tokenizer
    from pipelines.local_model import MODEL_NAME, LocalModel, LocalModelConfig

    meta = gguf_metadata(embedded_gguf())
    folder = Path(tempfile.mkdtemp(prefix="sluice-tok-"))
    load_tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": meta["tokenizer.chat_template"],
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>"}))
    with LocalModel(LocalModelConfig(parallel=4, ctx_per_slot=1024)) as url:
        client = LLMClient(EndpointConfig(base_url=url, model=MODEL_NAME, max_concurrency=4, timeout_s=900))
        started = time.perf_counter()
        split = Magpie(num_rows=n, max_tokens=max_tokens, response_max_tokens=max_tokens, min_words=1).run(
            pl.DataFrame({"id": []}, schema={"id": pl.String}), client)
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        done = subprocess.run([distilabel, "-c", DISTILABEL_MAGPIE, url, str(folder), str(n), str(max_tokens)],
                              capture_output=True, text=True, timeout=1200)
        theirs_s = time.perf_counter() - started
    theirs = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-2000:]}
    rows = pl.concat([split.kept, split.rejected], how="diagonal")
    return {"rows_asked": n, "max_tokens": max_tokens,
            "sluice": {"seconds": round(ours_s, 1), "requests": client.usage.requests, "kept": len(split.kept),
                       "rejected": dict(split.rejected.group_by("reason").len().iter_rows()) if len(split.rejected) else {},
                       "columns": rows.columns, "rows": rows.select("instruction", "output", "reason").to_dicts()},
            "distilabel": {"seconds": round(theirs_s, 1), "requests": theirs.get("requests"),
                           "columns": sorted(theirs["rows"][0]) if "rows" in theirs else None,
                           "rows": [{k: r.get(k) for k in ("instruction", "response")} for r in theirs.get("rows", [])]
                           if "rows" in theirs else theirs}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["magpie", "ultrafeedback"])
    parser.add_argument("--distilabel", required=True, help="python of a venv with distilabel[openai] (+ transformers for magpie)")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    result = ultrafeedback(args.distilabel) if args.what == "ultrafeedback" else magpie(args.distilabel, args.rows, args.max_tokens)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"side_by_side_{args.what}.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str)[:6000])


if __name__ == "__main__":
    main()
