"""Score pii_redact (and Presidio's recognisers, from presidio_side.py) on the sets of build_sets.py.

- recall per kind: a planted item counts as found when spans of its kind cover every non-space character of it;
- extra spans: spans that touch no planted item (in planted sets: real text taken for PII);
- changed documents: share of lookalike / clean documents in which anything was found.

    .venv/bin/python bench/pii/run.py /tmp/pii-sets
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from operators.clean.pii import KINDS, find_pii  # noqa: E402


def covered(item: dict, spans: list) -> bool:
    chars = [i for i in range(item["start"], item["end"]) if not item["value"][i - item["start"]].isspace()]
    return all(any(s <= i < e and k == item["kind"] for s, e, k in spans) for i in chars)


def touches(span: list, items: list[dict]) -> bool:
    return any(span[0] < it["end"] and it["start"] < span[1] for it in items)


def is_pii(item: dict) -> bool:
    """Faker's ipv6() also makes private and link-local addresses (fd00::/8, fe80::/10), which are not PII and
    which pii_redact leaves by design: they are not counted for recall."""
    return item["kind"] != "ip_address" or ipaddress.ip_address(item["value"]).is_global


def score(docs: list[dict], predictions: list[list]) -> dict:
    """`predictions[i]`: the spans found in `docs[i]`."""
    found, total, extra, changed = Counter(), Counter(), 0, 0
    misses: dict[str, list[str]] = {}
    for doc, spans in zip(docs, predictions, strict=True):
        changed += bool(spans)
        for item in filter(is_pii, doc["items"]):
            total[item["kind"]] += 1
            if covered(item, spans):
                found[item["kind"]] += 1
            else:
                misses.setdefault(item["kind"], []).append(item["value"])
        extra += sum(not touches(s, doc["items"]) for s in spans)
    return {"recall": {k: round(found[k] / total[k], 4) for k in KINDS if total[k]},
            "items": dict(total), "extra_spans": extra, "changed_docs": changed, "docs": len(docs),
            "misses": {k: v[:8] for k, v in misses.items()}}


def main() -> None:
    folder = Path(sys.argv[1])
    results = {}
    for name in ("dev", "heldout", "heldout2", "lookalike", "clean"):
        docs = [json.loads(line) for line in (folder / f"{name}.jsonl").open()]
        start = time.perf_counter()
        ours = [[list(s) for s in find_pii(d["text"])] for d in docs]
        seconds = time.perf_counter() - start
        chars = sum(len(d["text"]) for d in docs)
        results[name] = {"sluice": score(docs, ours) | {"seconds": round(seconds, 2), "mb_per_s": round(chars / seconds / 1e6, 2)}}
        peer = folder / f"{name}.presidio.jsonl"
        if peer.exists():
            theirs = [r["spans"] for r in map(json.loads, peer.open())]
            if len(theirs) == len(docs):  # (a run still writing it is skipped)
                results[name]["presidio"] = score(docs, theirs)
        if name in ("lookalike", "clean"):
            results[name]["sluice"]["changed_examples"] = [
                [d["id"], d["text"][s:e], k] for d, spans in zip(docs, ours) for s, e, k in spans][:20]
    print(json.dumps(results, indent=1, ensure_ascii=False))
    (folder / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
