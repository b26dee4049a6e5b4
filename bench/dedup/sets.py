"""Labelled near-duplicate sets, each built on its own from its own rows (../shared/data), with its own seed.

    .venv/bin/python bench/dedup/sets.py OUT_DIR [--sets short,web,heldout,cjk]

Each set is OUT_DIR/<set>/rows.jsonl ({id, text}, shuffled) and truth.jsonl ({id, group} for every row of a
duplicate group: an original and its copies). Everything is seeded: the same command gives the same files.
Output stays under /tmp (Alpaca is CC BY-NC; web text keeps its pages' copyrights): never commit it.

| set | role | originals | copies |
|---|---|---|---|
| short | tuning | Alpaca instruction (+ input) of 15-60 words, 15,000 drawn (of ~15.7k) | 2,500, one each |
| web | tuning | every web document of 80+ words (DCLM annotations, Dolma CC, Data-Juicer) | ~60% of them, one each |
| heldout | held out of all tuning | Self-Instruct seeds + user-oriented + WizardLM test instructions (instances joined) | ~70%, other edit kinds too |
| cjk | held out of all tuning | Chinese, Japanese, Thai passages of 2-4 lingua sentences | ~40%, character edits |

Edits of a copy (`edit`): one content edit (words replaced, from one word to ~8% of them; a truncation, the
end cut by 5-30%; a boilerplate prefix; or words + prefix) plus 0-2 cosmetic ones (case, punctuation, spacing).
The held-out set adds edit kinds the tuning sets never have (typos inside words, adjacent words swapped, words
deleted, a closing line appended), and the cjk set edits characters (scripts without spaces have no words).
Copies of the same original never share an id; originals that are exact duplicates after normalisation are
dropped from the pool first (an exact copy is not a near-duplicate question).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
SHORT_PREFIXES = ["Instruction: ", "Task: ", "Please answer the following. ", "Q: ", "Here is your task: ",
                  "You are a helpful assistant. ", "Question: "]
WEB_PREFIXES = ["Skip to main content\nHome | About | Contact\n", "Menu\nSearch\nSign in\n",
                "This site uses cookies. By continuing you agree to our use of cookies.\n",
                "Share this article: Facebook Twitter Email\n", "Advertisement\n"]
CLOSINGS = [" Thanks!", " Thank you in advance.", " Please be concise.", " Answer briefly."]


def normal(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def distinct(texts: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for t in texts:
        if normal(t) and normal(t) not in seen:
            seen.add(normal(t))
            out.append(t)
    return out


# --- edits ----------------------------------------------------------------------------------------------

def replace_words(text: str, rng: random.Random, vocab: list[str]) -> str:
    words = text.split(" ")
    k = max(1, round(rng.uniform(0, 0.08) * len(words)))  # one word to ~8% of them
    for i in rng.sample(range(len(words)), min(k, len(words))):
        words[i] = rng.choice(vocab)
    return " ".join(words)


def truncate(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    keep = max(1, round(len(words) * rng.uniform(0.70, 0.95)))
    return " ".join(words[:keep])


def cosmetic(text: str, rng: random.Random) -> str:
    for kind in rng.sample(["case", "punct", "space"], rng.choice([0, 1, 2])):
        if kind == "case":
            text = rng.choice([text.lower(), text.upper(), text.title()])
        elif kind == "punct":
            text = re.sub(r"[.,;:!?]", lambda m: rng.choice(["", ".", ",", "!", m.group(0)]), text)
        else:
            text = re.sub(r" ", lambda m: rng.choice([" ", "  ", "\n", " ", " "]), text)
    return text


def edit(text: str, rng: random.Random, vocab: list[str], prefixes: list[str]) -> str:
    kind = rng.choices(["words", "truncate", "prefix", "words+prefix"], [5, 2, 2, 1])[0]
    if "words" in kind:
        text = replace_words(text, rng, vocab)
    if kind == "truncate":
        text = truncate(text, rng)
    if "prefix" in kind:
        text = rng.choice(prefixes) + text
    return cosmetic(text, rng)


def heldout_edit(text: str, rng: random.Random, vocab: list[str]) -> str:
    """Edit kinds the tuning sets never have, or the tuning kinds, half and half."""
    if rng.random() < 0.5:
        return edit(text, rng, vocab, SHORT_PREFIXES)
    words = text.split(" ")
    k = max(1, round(rng.uniform(0, 0.08) * len(words)))
    kind = rng.choice(["typos", "swap", "delete", "closing"])
    for _ in range(k if kind != "closing" else 0):
        i = rng.randrange(len(words))
        if kind == "typos" and len(words[i]) > 3:
            j = rng.randrange(len(words[i]) - 1)
            words[i] = words[i][:j] + words[i][j + 1] + words[i][j] + words[i][j + 2:]
        elif kind == "swap" and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        elif kind == "delete" and len(words) > 2:
            del words[i]
    text = " ".join(words) + (rng.choice(CLOSINGS) if kind == "closing" else "")
    return cosmetic(text, rng)


def char_edit(text: str, rng: random.Random, alphabet: list[str]) -> str:
    """Scripts without spaces: characters replaced (one to ~8%), the end cut, or a prefix; spacing changes."""
    kind = rng.choices(["chars", "truncate", "prefix"], [5, 2, 2])[0]
    chars = list(text)
    if kind == "chars":
        for i in rng.sample(range(len(chars)), max(1, round(rng.uniform(0, 0.08) * len(chars)))):
            chars[i] = rng.choice(alphabet)
    elif kind == "truncate":
        chars = chars[: max(1, round(len(chars) * rng.uniform(0.70, 0.95)))]
    else:
        chars = list(rng.choice(["【转载】", "原文：", "（広告）", "ข่าว: ", "สรุป "])) + chars
    text = "".join(chars)
    return re.sub(r"([。、，！？])", lambda m: rng.choice([m.group(1), " ", ""]), text) if rng.random() < 0.3 else text


# --- sets -----------------------------------------------------------------------------------------------

def planted(originals: list[str], copies: int, seed: int, make: Callable[[str, random.Random], str],
            prefix: str) -> tuple[list[dict], list[dict]]:
    """Rows (originals + one edited copy for `copies` of them, shuffled) and the truth table."""
    rng = random.Random(seed)
    rows = [{"id": f"{prefix}o{i:06d}", "text": t} for i, t in enumerate(originals)]
    truth = []
    for k, i in enumerate(sorted(rng.sample(range(len(originals)), copies))):
        rows.append({"id": f"{prefix}c{k:06d}", "text": make(originals[i], rng)})
        truth += [{"id": f"{prefix}o{i:06d}", "group": f"g{i}"}, {"id": f"{prefix}c{k:06d}", "group": f"g{i}"}]
    rng.shuffle(rows)
    return rows, truth


def vocabulary(texts: list[str], rng: random.Random, size: int = 5_000) -> list[str]:
    words = [w for t in texts for w in t.split() if w.isalpha()]
    return rng.sample(words, min(size, len(words)))


def short_set() -> tuple[list[dict], list[dict]]:
    alpaca = json.loads((SHARED / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json").read_text())
    texts = distinct(f"{r['instruction']}\n{r['input']}".strip() for r in alpaca)
    texts = [t for t in texts if 15 <= len(t.split()) <= 60]
    rng = random.Random(13)
    pool = rng.sample(texts, 15_000)
    vocab = vocabulary(pool, rng)
    return planted(pool, 2_500, 131, lambda t, r: edit(t, r, vocab, SHORT_PREFIXES), "s")


def web_texts() -> list[str]:
    web = SHARED / "web"
    texts = [json.loads(line)["text"] for line in (web / "dclm_quality_annotations" / "majority_data.jsonl").open()]
    texts += [json.loads(line)["text"] for f in sorted((web / "dolma_cc_samples" / "multiple_files").glob("*.jsonl"))
              for line in f.open()]
    texts += [json.loads(line)["text"] for line in gzip.open(web / "dolma_cc_samples" / "provided" / "documents" / "000.json.gz", "rt")]
    texts += [json.loads(line)["text"] for f in sorted((web / "datajuicer_samples").glob("*.jsonl")) for line in f.open()]
    return [t for t in distinct(texts) if len(t.split()) >= 80]


def web_set() -> tuple[list[dict], list[dict]]:
    pool = web_texts()
    rng = random.Random(17)
    vocab = vocabulary(pool, rng)
    return planted(pool, round(0.6 * len(pool)), 171, lambda t, r: edit(t, r, vocab, WEB_PREFIXES), "w")


def heldout_set() -> tuple[list[dict], list[dict]]:
    si = SHARED / "instructions"
    texts = []
    for name in ("self_instruct/seed_tasks.jsonl", "self_instruct/user_oriented_instructions.jsonl"):
        for line in (si / name).open():
            r = json.loads(line)
            texts.append("\n".join([r["instruction"]] + [x for inst in r["instances"] for x in (inst["input"], inst["output"]) if x]))
    texts += [json.loads(line)["Instruction"] for line in (si / "wizardlm_testset" / "WizardLM_testset.jsonl").open()]
    pool = [t for t in distinct(texts) if len(t.split()) >= 8]
    rng = random.Random(19)
    vocab = vocabulary(pool, rng)
    return planted(pool, round(0.7 * len(pool)), 191, lambda t, r: heldout_edit(t, r, vocab), "h")


def cjk_set() -> tuple[list[dict], list[dict]]:
    rng = random.Random(23)
    pool = []
    for lang in ("zh", "ja", "th"):
        sentences = [s.strip() for s in (SHARED / "langid" / "lingua" / "sentences" / f"{lang}.txt").open() if s.strip()]
        while sentences:
            k = rng.randint(2, 4)
            pool.append(("" if lang != "th" else " ").join(sentences[:k]))
            sentences = sentences[k:]
    pool = distinct(pool)
    alphabet = sorted({c for t in pool for c in t if not c.isspace()})
    return planted(pool, round(0.4 * len(pool)), 231, lambda t, r: char_edit(t, r, alphabet), "j")


SETS = {"short": short_set, "web": web_set, "heldout": heldout_set, "cjk": cjk_set}


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--sets", default=",".join(SETS))
    args = parser.parse_args()
    for name in args.sets.split(","):
        rows, truth = SETS[name]()
        write(args.out / name / "rows.jsonl", rows)
        write(args.out / name / "truth.jsonl", truth)
        groups = len({t["group"] for t in truth})
        print(f"{name}: {len(rows):,} rows, {groups:,} duplicate groups ({len(truth) - groups:,} duplicates to find)")


if __name__ == "__main__":
    main()
