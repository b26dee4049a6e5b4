"""Build the labelled PII sets: real sentences with items planted at known offsets, and clean real text.

Runs in the peer venv (needs Faker). Sets:
- dev:       items from this file's own format lists (the formats pii_redact was tuned on), planted into lingua
             sentences of 12 languages;
- heldout:   items made by Faker in 14 locales (formats nobody here wrote), planted into UDHR texts of other
             languages; never used for tuning;
- heldout2:  made after the patterns were frozen, from 16 Faker locales no other set uses, planted into lingua
             sentences of all 75 languages; looked at once (heldout was looked at while tuning the phone patterns);
- lookalike: real sentences with harmless look-alikes planted (dates, versions, ISBNs, example.com addresses,
             loopback/private/documentation IPs, prices, times, order numbers): nothing should change;
- clean:     real text with nothing planted (lingua sentences in groups of 8, UDHR); web pages are scored
             separately because they hold real contact details.

    /tmp/pii-venv/bin/python bench/pii/build_sets.py --out /tmp/pii-sets
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
from pathlib import Path

from faker import Faker

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
LINGUA = SHARED / "langid" / "lingua" / "sentences"
UDHR = SHARED / "langid" / "udhr" / "udhr.jsonl"
NO_SPACES = {"zh", "ja", "th"}
CONTEXT = {"email": ["E-mail: ", "Contact: ", "邮箱：", "mail ", ""], "phone": ["Tel: ", "Phone: ", "电话：", "Тел.: ", ""],
           "ip_address": ["IP ", "from ", ""], "card": ["Card: ", "Karte ", ""], "iban": ["IBAN: ", "IBAN ", ""],
           "secret": ["key: ", "token=", ""], "private_key": ["\n"]}


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def luhn_complete(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + rand(rng, string.digits, length - len(prefix) - 1)
    for check in string.digits:
        digits = body + check
        total = sum(int(c) if i % 2 == 0 else (int(c) * 2 - 9 if int(c) > 4 else int(c) * 2)
                    for i, c in enumerate(reversed(digits)))
        if total % 10 == 0:
            return digits


def iban_complete(country: str, bban: str) -> str:
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    return f"{country}{check:02d}{bban}"


def grouped(text: str, size: int = 4, sep: str = " ") -> str:
    return sep.join(text[i:i + size] for i in range(0, len(text), size))


def secret(rng: random.Random) -> str:
    a, d = string.ascii_letters, string.ascii_letters + string.digits
    kind = rng.randrange(9)
    return [lambda: "AKIA" + rand(rng, string.ascii_uppercase + string.digits, 16),
            lambda: "AIza" + rand(rng, d + "-_", 35),
            lambda: "ghp_" + rand(rng, d, 36),
            lambda: "github_pat_" + rand(rng, d, 22) + "_" + rand(rng, d, 59),
            lambda: "xoxb-" + rand(rng, string.digits, 12) + "-" + rand(rng, string.digits, 13) + "-" + rand(rng, d, 24),
            lambda: "sk_live_" + rand(rng, d, 24),
            lambda: "sk-proj-" + rand(rng, d + "-_", 48),
            lambda: "hf_" + rand(rng, a, 34),
            lambda: "glpat-" + rand(rng, d + "-_", 20)][kind]()


def private_key(rng: random.Random) -> str:
    label = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    lines = [rand(rng, string.ascii_letters + string.digits + "+/", 64) for _ in range(rng.randint(3, 8))]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"


# --- dev: hand-written formats -------------------------------------------------------------------------------

def dev_item(rng: random.Random, kind: str) -> str:
    n = lambda k: rand(rng, string.digits, k)  # noqa: E731
    if kind == "email":
        user = rng.choice(["li.wei", "jana_novak", "m.mueller+news", "ivan1987", "o.brien", "k-tanaka"])
        domain = rng.choice(["163.com", "gmail.com", "seznam.cz", "uni-heidelberg.de", "mail.ru", "yahoo.co.jp",
                             "outlook.fr", "company.com.br"])
        return rng.choice([f"{user}@{domain}", f"{user.upper()}@{domain}", f"{user} [at] {domain.replace('.', ' [dot] ')}",
                           f"{user}(at){domain}"])
    if kind == "phone":
        return rng.choice([
            f"+44 20 {n(4)} {n(4)}", f"+1 (212) 555-{n(4)}", f"(212) 555-{n(4)}", f"212.555.{n(4)}", f"212-555-{n(4)}",
            f"+49 30 {n(8)}", f"030/{n(7)}", f"06 {n(2)} {n(2)} {n(2)} {n(2)}", f"+33 6 {n(2)} {n(2)} {n(2)} {n(2)}",
            f"138 {n(4)} {n(4)}", f"139{n(8)}", f"+86 10 {n(8)}", f"03-{n(4)}-{n(4)}", f"090-{n(4)}-{n(4)}",
            f"+91 98{n(3)} {n(5)}", f"(11) 9{n(4)}-{n(4)}", f"+7 (495) {n(3)}-{n(2)}-{n(2)}", f"0044 20 {n(4)} {n(4)}",
            f"+34 91 {n(3)} {n(2)} {n(2)}", f"020 {n(4)} {n(4)}", f"07700 {n(6)}", f"+81-3-{n(4)}-{n(4)}"])
    if kind == "ip_address":
        return rng.choice([f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                           f"2a00:1450:{rng.randint(4096, 65535):x}::{rng.randint(1, 65535):x}",
                           f"2001:4860:4860:0:0:0:0:{rng.randint(1, 9999):x}"])
    if kind == "card":
        prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("6011", 16), ("35", 16)])
        digits = luhn_complete(rng, prefix, length)
        return rng.choice([digits, grouped(digits), grouped(digits, sep="-")]) if length == 16 else digits
    if kind == "iban":
        country, bban = rng.choice([("DE", n(18)), ("GB", "NWBK" + n(14)), ("FR", n(10) + "0" + n(10) + n(2)),
                                    ("ES", n(20)), ("NL", "ABNA" + n(10)), ("IT", "X" + n(22)), ("PL", n(24))])
        code = iban_complete(country, bban)
        return rng.choice([code, grouped(code)])
    if kind == "secret":
        return secret(rng)
    return private_key(rng)


# --- heldout: Faker's formats ----------------------------------------------------------------------------

# heldout2: locales no earlier set used, built after the patterns were frozen and never tuned on
LOCALES2 = ["en_AU", "en_CA", "en_IN", "fr_CA", "es_MX", "de_AT", "de_CH", "cs_CZ", "sv_SE", "tr_TR", "uk_UA",
            "vi_VN", "th_TH", "id_ID", "zh_TW", "fi_FI"]
LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR", "ru_RU", "zh_CN",
           "ja_JP", "ko_KR", "hi_IN"]


def faker_item(fakers: dict[str, Faker], rng: random.Random, kind: str, locales: list[str] = LOCALES) -> str:
    fake = fakers[rng.choice(locales)]
    if kind == "email":  # Faker often uses example.org/.com/.net, which pii_redact rightly leaves: draw again
        return next(e for e in iter(lambda: rng.choice([fake.free_email, fake.company_email, fake.email])(), None)
                    if not re.search(r"@example\.(com|org|net)$", e))
    if kind == "phone":
        return fake.phone_number()
    if kind == "ip_address":
        return fake.ipv4_public() if rng.random() < 0.7 else fake.ipv6()
    if kind == "card":
        return fakers["en_US"].credit_card_number(card_type=rng.choice(["visa", "mastercard", "amex", "discover", "jcb", "diners"]))
    if kind == "iban":
        return fakers[rng.choice(["de_DE", "en_GB", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL"])].iban()
    if kind == "secret":
        return secret(rng)
    return private_key(rng)


def lookalike(fake: Faker, rng: random.Random) -> str:
    return rng.choice([
        lambda: fake.date(), lambda: fake.date(pattern="%d.%m.%Y"), lambda: fake.date(pattern="%m/%d/%Y"),
        lambda: f"version {rng.randint(0, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
        lambda: f"v{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 99)}",
        lambda: "ISBN " + fake.isbn13(), lambda: "ISBN " + fake.isbn10(), lambda: fake.safe_email(),
        lambda: fake.ipv4_private(), lambda: "127.0.0.1", lambda: "192.0.2." + str(rng.randint(1, 254)),
        lambda: "2001:db8::" + str(rng.randint(1, 99)), lambda: f"{rng.randint(1, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}",
        lambda: f"${rng.randint(1, 999)},{rng.randint(100, 999)}.{rng.randint(10, 99)}",
        lambda: f"order no. {rng.randint(10**6, 10**9)}", lambda: f"{rng.randint(1900, 2000)}-{rng.randint(2001, 2030)}",
        lambda: f"{rng.uniform(-90, 90):.6f}, {rng.uniform(-180, 180):.6f}", lambda: fake.ean13(),
        lambda: f"{rng.randint(1, 9999):,} km²", lambda: "localhost:8080"])()


def plant(rng: random.Random, sentences: list[str], lang: str, items: list[tuple[str, str]]) -> tuple[str, list[dict]]:
    """Sentences with each (kind, value) inserted between two of them, with a context word or none."""
    glue = "" if lang in NO_SPACES else " "
    slots = sorted(rng.sample(range(len(sentences) + 1), min(len(items), len(sentences) + 1)))
    text, labels, pieces = "", [], list(sentences)
    for slot, (kind, value) in sorted(zip(slots, items), reverse=True):
        pieces.insert(slot, (kind, value))
    for piece in pieces:
        if isinstance(piece, tuple):
            kind, value = piece
            text += glue + rng.choice(CONTEXT[kind]) if text else rng.choice(CONTEXT[kind])
            labels.append({"start": len(text), "end": len(text) + len(value), "kind": kind, "value": value})
            text += value
        else:
            text += (glue if text else "") + piece
    return text, labels


def lingua(lang: str) -> list[str]:
    return (LINGUA / f"{lang}.txt").read_text().splitlines()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/pii-sets"))
    ap.add_argument("--per-kind", type=int, default=400)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kinds = ["email", "phone", "ip_address", "card", "iban", "secret", "private_key"]
    fakers = {loc: Faker(loc) for loc in LOCALES + LOCALES2}
    for loc, fake in fakers.items():
        fake.seed_instance(7)
    udhr = [json.loads(line) for line in UDHR.open()]

    def write(name: str, docs: list[dict]) -> None:
        with open(args.out / f"{name}.jsonl", "w") as fh:
            for doc in docs:
                fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
        print(name, len(docs), "documents", sum(len(d["items"]) for d in docs), "items")

    rng = random.Random(1)
    dev_langs = ["en", "zh", "de", "fr", "es", "ru", "ja", "ar", "hi", "pt", "it", "ko"]
    docs = []
    for i in range(args.per_kind * len(kinds) // 2):
        lang = dev_langs[i % len(dev_langs)]
        start = rng.randrange(900)
        items = [(k, dev_item(rng, k)) for k in rng.sample(kinds, 2)]
        text, labels = plant(rng, lingua(lang)[start:start + 4], lang, items)
        docs.append({"id": f"dev{i}", "lang": lang, "text": text, "items": labels})
    write("dev", docs)

    rng = random.Random(2)
    docs = []
    for i in range(args.per_kind * len(kinds) // 2):
        doc = udhr[rng.randrange(len(udhr))]
        words = doc["text"].split(". ")
        start = rng.randrange(max(1, len(words) - 4))
        items = [(k, faker_item(fakers, rng, k)) for k in rng.sample(kinds, 2)]
        text, labels = plant(rng, words[start:start + 4], "", items)
        docs.append({"id": f"held{i}", "lang": doc["iso6393"], "text": text, "items": labels})
    write("heldout", docs)

    rng = random.Random(3)
    docs = []
    for i in range(2000):
        lang = dev_langs[i % len(dev_langs)]
        start = rng.randrange(900)
        sentences = lingua(lang)[start:start + 4]
        for _ in range(3):
            sentences.insert(rng.randrange(len(sentences) + 1), lookalike(fakers["en_US"], rng))
        docs.append({"id": f"look{i}", "lang": lang, "text": " ".join(sentences), "items": []})
    write("lookalike", docs)

    docs = []
    for lang in sorted(p.stem for p in LINGUA.glob("*.txt")):
        lines = lingua(lang)
        docs += [{"id": f"{lang}-{j}", "lang": lang, "text": " ".join(lines[j:j + 8]), "items": []}
                 for j in range(0, len(lines), 8)]
    docs += [{"id": f"udhr-{i}-{d['iso6393']}", "lang": d["iso6393"], "text": d["text"], "items": []} for i, d in enumerate(udhr)]
    write("clean", docs)

    rng = random.Random(4)
    docs = []
    for i in range(args.per_kind * len(kinds) // 2):
        lang = sorted(p.stem for p in LINGUA.glob("*.txt"))[i % 75]
        start = rng.randrange(900)
        items = [(k, faker_item(fakers, rng, k, LOCALES2)) for k in rng.sample(kinds, 2)]
        text, labels = plant(rng, lingua(lang)[start:start + 5], lang, items)
        docs.append({"id": f"heldtwo{i}", "lang": lang, "text": text, "items": labels})
    write("heldout2", docs)


if __name__ == "__main__":
    main()
