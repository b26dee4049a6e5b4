"""Build the labelled near-duplicate set and the scale sets from the 52k Alpaca records (../shared/data).

    python bench/dedup/make_data.py labelled OUT_DIR            # 52,002 originals + planted near-copies
    python bench/dedup/make_data.py scale OUT_DIR ROWS          # ROWS synthetic documents, ~10% near-copies
    python bench/dedup/make_data.py copies OUT_DIR [ROWS]       # the issue's 1M set: base rows x29, one word each
    python bench/dedup/make_data.py copies OUT_DIR [ROWS] --min-words 15   # the same from records of 15+ words
    python bench/dedup/make_data.py copies OUT_DIR 25000 --min-words 15 --times 5   # 5,000 base rows x5

The scale sets are written as Parquet (scale_ROWS.parquet, id + text, in row groups of 100k rows), so a
scale run measures dedup, not the JSON reader.

labelled.jsonl: {id, text}; truth.jsonl: {id, group} for every row of a planted group (original + copies).
Planted edits (1-2 per copy, on originals of 40+ words): casing, punctuation, 1-3 words replaced, a prefix,
a dropped sentence, whitespace. Everything is seeded: the same command gives the same files.
Output stays under /tmp (Alpaca is CC BY-NC: never commit the generated files).
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
FILLER = ["very", "really", "also", "quite", "the", "some", "many", "often", "new", "good"]
PREFIXES = ["Sure! ", "Here is the answer: ", "Answer: ", "Of course. ", "Great question! "]


def alpaca_texts() -> list[str]:
    return ["\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p) for r in json.loads(ALPACA.read_text())]


def edit(text: str, rng: random.Random) -> str:
    for kind in rng.sample(["case", "punct", "words", "prefix", "sentence", "space"], rng.choice([1, 2])):
        if kind == "case":
            text = rng.choice([text.lower(), text.upper(), text.title()])
        elif kind == "punct":
            text = re.sub(r"[.,;:!?]", lambda m: rng.choice(["", ".", ",", "!", m.group(0)]), text)
        elif kind == "words":
            words = text.split(" ")
            for _ in range(rng.randint(1, 3)):
                words[rng.randrange(len(words))] = rng.choice(FILLER)
            text = " ".join(words)
        elif kind == "prefix":
            text = rng.choice(PREFIXES) + text
        elif kind == "sentence":
            sentences = re.split(r"(?<=[.!?])\s+", text)
            if len(sentences) >= 4:
                del sentences[rng.randrange(len(sentences))]
            text = " ".join(sentences)
        else:
            text = re.sub(r" ", lambda m: rng.choice([" ", "  ", "\n", " "]), text)
    return text


def labelled(out: Path, copies: int = 5_000, seed: int = 42) -> None:
    rng = random.Random(seed)
    texts = alpaca_texts()
    rows = [{"id": f"a{i:06d}", "text": t} for i, t in enumerate(texts)]
    eligible = [i for i, t in enumerate(texts) if len(t.split()) >= 40]
    truth = {}
    for k, i in enumerate(rng.sample(eligible, copies)):
        rows.append({"id": f"c{k:06d}", "text": edit(texts[i], rng)})
        truth[f"a{i:06d}"] = truth[f"c{k:06d}"] = f"a{i:06d}"
    rng.shuffle(rows)  # copies are not conveniently after their originals
    write(out / "labelled.jsonl", rows)
    write(out / "truth.jsonl", [{"id": k, "group": g} for k, g in truth.items()])
    print(f"{len(rows):,} rows ({copies:,} planted copies) -> {out / 'labelled.jsonl'}")


def scale(out: Path, n: int, seed: int = 42, chunk: int = 100_000) -> None:
    """`n` documents: each joins 2-4 random Alpaca records (distinct documents of realistic length);
    about 10% are edited copies of an earlier document."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    texts = alpaca_texts()
    path = out / f"scale_{n}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    recent: list[str] = []
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, n, chunk):
            ids, docs = [], []
            for i in range(start, min(n, start + chunk)):
                if recent and rng.random() < 0.1:
                    text = edit(rng.choice(recent), rng)
                else:
                    text = "\n\n".join(rng.choice(texts) for _ in range(rng.randint(2, 4)))
                    recent.append(text)
                    if len(recent) > 10_000:
                        recent.pop(rng.randrange(len(recent)))
                ids.append(f"d{i:08d}")
                docs.append(text)
            writer.write_table(pa.table({"id": ids, "text": docs}, schema=schema))
    print(f"{n:,} rows -> {path}")


def copies(out: Path, n: int = 1_000_000, times: int = 29, variants: int = 6_000, seed: int = 29,
           min_words: int = 0) -> None:
    """Issue #13's 1M-row set: base rows (distinct Alpaca records, plus `variants` planted near-copies of some
    of them made by `edit`), each repeated `times` times: the base row, then copies with one word replaced.
    Every row has a near-duplicate; the distinct documents are the originals (n / times - variants of them).
    Written as copies_<n>.parquet (id, text, base: the original it derives from) in 100k-row groups, rows in
    a seeded shuffle. With `min_words`, only records of that many words or more are drawn (issue #13 defines
    short instructions as 15-60 words; a 5-word record with one word replaced is no longer the same task) and
    the file is copies_<n>_min<min_words>.parquet. With `times` other than 29 (a set small enough for a slow
    peer) there are n / times base rows, the same share of them variants, and the file is
    copies_<n>_min<min_words>_x<times>.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    seen, texts = set(), []
    for t in alpaca_texts():
        key = re.sub(r"\W+", " ", t.lower()).strip()
        if key not in seen and len(t.split()) >= min_words:
            seen.add(key)
            texts.append(t)
    base_rows = -(-n // times)
    variants = variants if times == 29 else round(base_rows * variants / 34_483)
    originals = rng.sample(texts, base_rows - variants)
    bases = [(t, i) for i, t in enumerate(originals)]
    bases += [(edit(originals[i], rng), i) for i in rng.sample(range(len(originals)), variants)]
    rows = []
    for b, (text, origin) in enumerate(bases):
        for k in range(times):
            if k:
                words = text.split(" ")
                words[rng.randrange(len(words))] = rng.choice(FILLER)
                text_k = " ".join(words)
            else:
                text_k = text
            rows.append((text_k, origin))
    rows = rows[:n]
    rng.shuffle(rows)
    suffix = (f"_min{min_words}" if min_words else "") + (f"_x{times}" if times != 29 else "")
    path = out / f"copies_{n}{suffix}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": [f"r{i:07d}" for i in range(len(rows))], "text": [r[0] for r in rows],
                      "base": [f"o{r[1]:06d}" for r in rows]})
    pq.write_table(table, path, compression="zstd", row_group_size=100_000)
    print(f"{len(rows):,} rows from {len(bases):,} base rows ({len(originals):,} distinct documents) -> {path}")


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    what, out = sys.argv[1], Path(sys.argv[2])
    if what == "labelled":
        labelled(out)
    elif what == "copies":
        options = {k: int(sys.argv[sys.argv.index(f"--{k.replace('_', '-')}") + 1])
                   for k in ("min_words", "times") if f"--{k.replace('_', '-')}" in sys.argv}
        copies(out, *(int(a) for a in sys.argv[3:4] if not a.startswith("--")), **options)
    else:
        scale(out, int(sys.argv[3]))
