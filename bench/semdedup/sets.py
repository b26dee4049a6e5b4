"""Labelled paraphrase sets for semantic dedup, each built alone from real rows by its own rules and seed.

    PYTHONPATH=. .venv/bin/python bench/semdedup/sets.py /tmp/sd13

Every set is DIR/<name>/rows.jsonl (id, text) and truth.jsonl (id, group: an original and its paraphrase).
A paraphrase is made by rules (synonyms from a small hand-made dictionary, a new opening verb or question
form, a wrapping sentence) and kept only when MinHash cannot see it: word-2-gram Jaccard (the shingles
`minhash_dedup` uses: each Chinese character a word) below 0.5 and containment below 0.8, so Sluice's
MinHash defaults (Jaccard >= 0.6 or containment >= 0.9) miss every pair by construction. Rows that are not
paraphrases are real, distinct rows of the same source: the hazard for precision.

  alpaca   tuning     English, Alpaca instructions (CC BY-NC: read from ../shared/data, never copied);
                      rules A: opening-verb synonyms, word dictionary A, request templates
  heldout  held out   English, Self-Instruct (seed + user-oriented), WizardLM test, GSM8K and TruthfulQA
                      questions; rules B: question forms, word dictionary B (none of A's replacements),
                      other templates; never used to choose a default
  zh       measured   Chinese, lingua sentences cut at the first clause; dictionary and templates ZH
  de       measured   German, lingua sentences; dictionary and templates DE
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
from operators.dedup.shingles import key_text, shingle  # noqa: E402  the shingles MinHash compares

VERBS_A = {
    "write": ["Compose", "Draft", "Put together"], "generate": ["Produce", "Come up with"],
    "describe": ["Portray", "Give a description of"], "explain": ["Clarify", "Give an explanation of"],
    "list": ["Enumerate", "Give a list of"], "create": ["Build", "Put together"], "give": ["Provide", "Offer"],
    "name": ["Identify", "Mention"], "find": ["Determine", "Work out"], "identify": ["Pick out", "Point out"],
    "summarize": ["Sum up", "Give a summary of"], "rewrite": ["Rephrase", "Reword"],
    "suggest": ["Recommend", "Propose"], "classify": ["Categorize", "Sort"], "edit": ["Revise", "Polish"],
    "compare": ["Contrast", "Weigh up"], "construct": ["Build", "Form"], "design": ["Devise", "Sketch out"],
    "develop": ["Devise", "Work out"], "analyze": ["Examine", "Assess"], "provide": ["Give", "Supply"],
    "convert": ["Transform", "Change"], "make": ["Produce", "Build"], "come": ["Think"],
    "translate": ["Render"], "calculate": ["Compute", "Work out"], "brainstorm": ["Think up"],
}
WORDS_A = {
    "following": "given", "sentence": "statement", "paragraph": "passage", "story": "tale", "short": "brief",
    "examples": "instances", "example": "instance", "ways": "methods", "important": "significant",
    "people": "individuals", "help": "assist", "use": "utilize", "about": "regarding", "good": "great",
    "different": "various", "main": "primary", "benefits": "advantages", "article": "piece", "text": "passage",
    "word": "term", "words": "terms", "three": "3", "five": "5", "two": "2", "four": "4", "ten": "10",
    "best": "finest", "common": "frequent", "type": "kind", "types": "kinds", "improve": "enhance",
    "simple": "basic", "tips": "pointers", "creative": "imaginative", "describing": "depicting",
    "person": "individual", "difference": "distinction", "differences": "distinctions", "new": "novel",
    "poem": "verse", "list": "set", "way": "method", "idea": "notion", "ideas": "notions", "given": "provided",
    "reasons": "motives", "country": "nation", "company": "firm", "product": "item", "job": "position",
}
TEMPLATES_A = ["Please {x}", "Could you {l}?", "I'd like you to {l}.", "Your task: {x}", "{x} Please keep it clear.",
               "Here is a request: {x}", "Can you {l}?", "Quick question: could you {l}?"]

WORDS_B = {
    "how many": "what number of", "altogether": "in total", "each": "every", "bought": "purchased",
    "buys": "purchases", "buy": "purchase", "money": "cash", "wants": "would like", "needs": "requires",
    "need": "require", "gets": "receives", "get": "obtain", "then": "after that", "twice": "two times",
    "also": "additionally", "because": "since", "however": "but", "large": "big", "small": "little",
    "quickly": "fast", "start": "begin", "starts": "begins", "end": "finish", "answer": "response",
    "question": "query", "show": "demonstrate", "want": "wish", "try": "attempt", "think": "believe",
    "enough": "sufficient", "total": "overall", "every": "each", "day": "daily period", "week": "seven days",
    "hours": "hrs", "minutes": "mins", "dollars": "bucks", "true": "correct", "happens": "occurs",
    "happen": "occur", "most": "the majority of", "always": "invariably", "never": "not ever",
    "because of": "owing to", "instance": "case", "sentence": "phrase", "input": "provided text",
    "output": "result", "task": "assignment", "user": "person using it", "article": "write-up",
    "email": "e-mail", "someone": "somebody", "anyone": "anybody", "explain": "spell out", "describe": "outline",
    "write": "pen", "create": "craft", "generate": "churn out", "give": "hand over", "list": "itemize",
    "find": "track down", "suggest": "put forward",
}
QUESTIONS_B = [(r"^What is (.+)\?$", "Can you tell me what {0} is?"),
               (r"^What are (.+)\?$", "I'd like to know what {0} are."),
               (r"^How (?:do|can) (?:I|you|we) (.+)\?$", "What's the best way to {0}?"),
               (r"^Can you (.+)\?$", "Would you be able to {0}?"),
               (r"^Is it (.+)\?$", "Would it be {0}?")]
TEMPLATES_B = ["In other words: {x}", "{x} (asking for a friend)", "Here's something I'm wondering about. {x}",
               "Let me put it another way. {x}", "I have a request. {x}", "{x} Thank you in advance!"]

WORDS_ZH = {
    "我们": "咱们", "非常": "十分", "但是": "可是", "因为": "由于", "所以": "因此", "可以": "能够", "已经": "早已",
    "现在": "如今", "开始": "着手", "知道": "晓得", "喜欢": "喜爱", "觉得": "认为", "重要": "要紧", "特别": "尤其",
    "一起": "一同", "马上": "立刻", "帮助": "协助", "看见": "看到", "美丽": "漂亮", "容易": "简单", "经常": "常常",
    "大家": "各位", "虽然": "尽管", "如果": "假如", "怎么": "如何", "为什么": "为何", "东西": "物品", "发现": "察觉",
    "成为": "变成", "许多": "很多", "每天": "天天", "举行": "举办", "参加": "参与", "进行": "开展", "提供": "供给",
    "目前": "眼下", "今年": "本年", "主要": "首要", "表示": "指出", "希望": "盼望", "活动": "行动", "问题": "疑问",
    "公司": "企业", "学生": "学子", "孩子": "小孩", "时间": "时光", "地方": "地点", "工作": "职务", "一个": "一只",
    "没有": "并无", "就是": "便是", "的": "之", "在": "于", "是": "乃",
}
TEMPLATES_ZH = ["换句话说，{x}", "也就是说，{x}", "简单来说，{x}", "据说{x}", "有人说：{x}", "{x}，大概就是这样"]

WORDS_DE = {
    "sehr": "äußerst", "aber": "jedoch", "weil": "da", "auch": "ebenfalls", "jetzt": "nun", "immer": "stets",
    "groß": "riesig", "große": "riesige", "kleine": "winzige", "klein": "winzig", "Arbeit": "Tätigkeit",
    "viele": "zahlreiche", "wichtig": "bedeutend", "wichtige": "bedeutende", "schnell": "rasch", "schön": "hübsch",
    "Problem": "Schwierigkeit", "Probleme": "Schwierigkeiten", "Hilfe": "Unterstützung", "Leute": "Menschen",
    "Kinder": "Kids", "Stadt": "Ortschaft", "beginnen": "anfangen", "danach": "anschließend", "vorher": "zuvor",
    "oft": "häufig", "bereits": "schon", "schon": "bereits", "nur": "lediglich", "natürlich": "selbstverständlich",
    "wirklich": "tatsächlich", "bekommen": "erhalten", "zeigen": "darstellen", "etwa": "ungefähr", "gut": "prima",
    "neue": "frische", "neuen": "frischen", "können": "vermögen", "wurde": "ward", "ist": "bleibt", "und": "sowie",
    "mit": "samt", "für": "zugunsten", "bei": "nahe", "über": "bezüglich", "mehr": "zusätzlich", "sind": "bleiben",
    "die": "jene", "der": "jener", "das": "jenes", "eine": "irgendeine", "ein": "irgendein", "hat": "besitzt",
}
TEMPLATES_DE = ["Anders gesagt: {x}", "Mit anderen Worten: {x}", "Kurz gesagt: {x}", "{x} (so heißt es)",
                "Man sagt: {x}", "Sinngemäß: {x}"]


def swap_words(text: str, words: dict[str, str], rng: random.Random, share: float = 0.85) -> str:
    """Replace dictionary words (whole words, longest first, keeping a capital) with probability `share`."""
    keys = sorted(words, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, keys)) + r")\b", re.IGNORECASE)

    def swap(m: re.Match) -> str:
        found = m.group(0)
        if rng.random() > share:
            return found
        new = words.get(found.lower(), words.get(found, found))
        return new[0].upper() + new[1:] if found[0].isupper() else new
    return pattern.sub(swap, text)


def swap_chars(text: str, words: dict[str, str], rng: random.Random, share: float = 0.85) -> str:
    """The same for a script without spaces: replace dictionary words wherever they occur."""
    pattern = re.compile("|".join(map(re.escape, sorted(words, key=len, reverse=True))))
    return pattern.sub(lambda m: words[m.group(0)] if rng.random() < share else m.group(0), text)


def wrap(text: str, templates: list[str], rng: random.Random) -> str:
    x = text.strip()
    low = x[0].lower() + x[1:]
    return rng.choice(templates).format(x=x, l=low.rstrip(".!?"))


def rules_a(text: str, rng: random.Random) -> str:
    first, _, rest = text.partition(" ")
    if first.lower() in VERBS_A and rest:
        text = f"{rng.choice(VERBS_A[first.lower()])} {rest}"
    return wrap(swap_words(text, WORDS_A, rng), TEMPLATES_A, rng)


def rules_b(text: str, rng: random.Random) -> str:
    for pattern, form in QUESTIONS_B:
        if m := re.match(pattern, text.strip(), re.DOTALL):
            text = form.format(m.group(1)[0].lower() + m.group(1)[1:])
            break
    return wrap(swap_words(text, WORDS_B, rng), TEMPLATES_B, rng)


def rules_zh(text: str, rng: random.Random) -> str:
    return wrap(swap_chars(text, WORDS_ZH, rng), TEMPLATES_ZH, rng)


def rules_de(text: str, rng: random.Random) -> str:
    return wrap(swap_words(text, WORDS_DE, rng), TEMPLATES_DE, rng)


def minhash_overlap(a: list[str], b: list[str]) -> list[tuple[float, float]]:
    """Exact word-2-gram Jaccard and containment of each pair, on MinHash dedup's own shingles."""
    sh = shingle(key_text(pl.DataFrame({"text": a + b}), ["text"]), 2, "auto")
    sets = [set(sh.hashes[x:y].tolist()) for x, y in zip(sh.offsets[:-1], sh.offsets[1:])]
    out = []
    for i in range(len(a)):
        s, t = sets[i], sets[len(a) + i]
        inter = len(s & t)
        out.append((inter / max(len(s | t), 1), inter / max(min(len(s), len(t)), 1)))
    return out


def build(name: str, texts: list[str], rules, pairs: int, seed: int, out: Path) -> dict:
    """Distinct real texts, and `pairs` of them paraphrased by `rules` where MinHash cannot see it."""
    rng = random.Random(seed)
    seen, unique = set(), []
    for t in texts:
        key = " ".join(t.lower().split())
        if t.strip() and key not in seen:
            seen.add(key)
            unique.append(t.strip())
    rng.shuffle(unique)
    candidates = unique
    paraphrases = [rules(t, rng) for t in candidates]
    overlap = minhash_overlap(candidates, paraphrases)
    invisible = [i for i, (j, c) in enumerate(overlap) if j < 0.5 and c < 0.8][:pairs]
    rows, truth = [], []
    for n, t in enumerate(unique):
        rows.append({"id": f"{name}{n:05d}", "text": t})
    for k, i in enumerate(invisible):
        rows.append({"id": f"{name}p{k:05d}", "text": paraphrases[i]})
        truth += [{"id": f"{name}{i:05d}", "group": str(k)}, {"id": f"{name}p{k:05d}", "group": str(k)}]
    rng.shuffle(rows)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (folder / "truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in truth))
    jac = sorted(overlap[i][0] for i in invisible)
    return {"set": name, "rows": len(rows), "pairs": len(invisible), "tried": len(candidates),
            "invisible_share": round(sum(j < 0.5 and c < 0.8 for j, c in overlap) / len(overlap), 3),
            "pair_jaccard_median": round(jac[len(jac) // 2], 3) if jac else None}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sources() -> dict[str, tuple[list[str], object, int, int]]:
    """name -> (texts, rules, pairs, seed)."""
    alpaca = json.loads((DATA / "instructions/alpaca_52k/alpaca_data_en_52k.json").read_text())
    alpaca = [r["instruction"] for r in alpaca if not r["input"] and 5 <= len(r["instruction"].split()) <= 40]
    random.Random(11).shuffle(alpaca)
    si = DATA / "instructions/self_instruct"
    held = [r["instruction"] for f in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl") for r in jsonl(si / f)]
    held += [r["Instruction"] for r in jsonl(DATA / "instructions/wizardlm_testset/WizardLM_testset.jsonl")]
    held += [r["question"] for r in jsonl(DATA / "benchmarks/gsm8k/test.jsonl")]
    held += pl.read_csv(DATA / "benchmarks/truthfulqa/TruthfulQA.csv")["Question"].to_list()
    lingua = DATA / "langid/lingua/sentences"
    zh = [re.split(r"[，。；！？]", line)[0] for line in (lingua / "zh.txt").read_text().splitlines()]
    zh = [t for t in zh if 8 <= len(t) <= 60]
    de = [line for line in (lingua / "de.txt").read_text().splitlines() if 5 <= len(line.split()) <= 30]
    return {"alpaca": (alpaca[:4000], rules_a, 800, 1), "heldout": (held, rules_b, 500, 2),
            "zh": (zh, rules_zh, 150, 3), "de": (de, rules_de, 150, 4)}


def main() -> None:
    out = Path(sys.argv[1])
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    for name, (texts, rules, pairs, seed) in sources().items():
        if names is None or name in names:
            print(json.dumps(build(name, texts, rules, pairs, seed, out)), flush=True)


if __name__ == "__main__":
    main()
