"""Web documents with planted boilerplate, for line/paragraph/sentence-span dedup (`line_dedup`).

    .venv/bin/python bench/dedup/lines_sets.py OUT_DIR

Two sets, each built on its own from its own documents, boilerplate and seed:

| set | role | documents | boilerplate planted |
|---|---|---|---|
| web | tuning | the 499 DCLM-annotated pages (English) | per "site" (12 of them): a header and footer line each, shared lines (cookie notice, newsletter, share), years varied; whole lines at the top and bottom |
| udhr | tuning | UDHR texts in 40 languages (Latin, Cyrillic, Arabic, Devanagari, Han, Kana, Hangul, Thai...), cut into pages of 6-14 lines | per language family of scripts: a footer line, a header line, sentences appended to a content line |
| heldout | held out of all tuning | Data-Juicer CC/C4/StackExchange/NIH/USPTO/arXiv samples, Dolma CC, and pages of 6-12 lingua sentences in Chinese, Japanese, German | per language (en, zh, ja, de): multi-line blocks (2-3 lines), single lines in the middle of a page, and sentences appended to the end of a content line (inline: no line of their own) |

Each set is OUT_DIR/<set>/rows.jsonl ({id, text}) and truth.jsonl ({id, content: [piece], planted: [piece]}):
the pieces of a document's text that are its own content (every non-blank original line) and the boilerplate
pieces planted into it. A tool's output is scored by which pieces survive intact (bench/dedup/lines_run.py).
Output stays under /tmp (web text keeps its pages' copyrights): never commit it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
WEB = SHARED / "web"

SITES = ["Northfield Gazette", "PrintPro Online", "Garden Answers", "TechDaily Hub", "Riverside Dental",
         "Open Recipes", "City Hoops", "TravelNest", "The Bookshelf Blog", "AutoFix Guides", "PetCare Corner",
         "Daily Finance Notes"]
HEADERS = ["Skip to main content | {site} | Home | About | Contact", "You are here: Home > {site} > Articles",
           "{site} - Menu - Search - Sign in - Register"]
FOOTERS = ["Copyright © {year} {site}. All rights reserved.", "© {year} {site} | Privacy Policy | Terms of Use",
           "{site} is a registered trademark. Powered by WordPress."]
SHARED_LINES = ["We use cookies to give you the best experience on our website. By continuing you agree to our cookie policy.",
                "Subscribe to our newsletter and get the latest updates straight to your inbox.",
                "Share this: Facebook, Twitter, LinkedIn, Email, Print",
                "Leave a Reply Cancel reply. Your email address will not be published.",
                "Related posts you might also like:"]

HELDOUT = {
    "en": {"blocks": [["Terms and conditions apply.", "Offer valid while stocks last.", "See store for details."],
                      ["Was this article helpful?", "Yes No", "Thanks for your feedback!"]],
           "lines": ["This article was last reviewed by our editorial team on {year}.",
                     "Sign up for free to continue reading this and thousands of other stories."],
           "inline": ["Click here to read the full story.", "All opinions expressed are the author's own."]},
    "zh": {"blocks": [["版权所有 © {year} 新华网络科技有限公司。", "未经许可，不得转载。", "联系我们：客服热线 400-800-1234。"]],
           "lines": ["本站部分内容来自互联网，如有侵权请联系删除。", "扫描二维码关注我们的微信公众号，获取更多资讯。"],
           "inline": ["更多精彩内容，请关注本站。", "点击查看原文。"]},
    "ja": {"blocks": [["このサイトについて｜プライバシーポリシー｜お問い合わせ", "Copyright © {year} 株式会社サンプル All Rights Reserved."]],
           "lines": ["この記事が気に入ったらフォローしてください。", "掲載されている情報は記事公開時点のものです。"],
           "inline": ["詳しくは公式サイトをご覧ください。", "続きを読むには会員登録が必要です。"]},
    "de": {"blocks": [["Impressum | Datenschutz | Kontakt", "Alle Rechte vorbehalten © {year} Musterverlag GmbH."]],
           "lines": ["Diese Website verwendet Cookies, um Ihnen ein besseres Nutzererlebnis zu bieten.",
                     "Melden Sie sich für unseren Newsletter an und verpassen Sie keine Neuigkeiten mehr."],
           "inline": ["Weitere Informationen finden Sie auf unserer Website.", "Alle Angaben ohne Gewähr."]},
}


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def content_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def build_web(rng: random.Random) -> list[dict]:
    """DCLM pages, each given a site: its header (and maybe a shared line) on top, footer lines below."""
    docs = read_jsonl(WEB / "dclm_quality_annotations" / "majority_data.jsonl")
    rows = []
    for i, doc in enumerate(docs):
        site = rng.choice(SITES)
        year = str(rng.choice([2019, 2020, 2021, 2022, 2023]))
        top = [rng.choice(HEADERS).format(site=site)] if rng.random() < 0.7 else []
        bottom = [f.format(site=site, year=year) for f in FOOTERS if rng.random() < 0.5]
        top += [rng.choice(SHARED_LINES)] if rng.random() < 0.3 else []
        bottom += [rng.choice(SHARED_LINES)] if rng.random() < 0.3 else []
        text = "\n".join(top + [doc["text"].strip("\n")] + bottom)
        rows.append({"id": f"web-{i:04d}", "text": text, "content": content_lines(doc["text"]), "planted": top + bottom})
    return rows


UDHR_LANGS = ["eng", "fra", "spa", "deu", "ita", "por", "nld", "pol", "ces", "tur", "vie", "ind", "swh", "fin",
              "hun", "rus", "ukr", "bul", "srp", "ell", "arb", "pes", "urd", "heb", "hin", "ben", "tam", "tel",
              "kor", "jpn", "cmn", "tha", "khm", "lao", "mya", "kat", "hye", "amh", "zul", "yor"]
UDHR_POOL = {  # by script: (header, footer, inline sentence)
    "Latn": ("Printable version | Text size: A A A", "Source: United Nations Office of the High Commissioner",
             "(Translation provided for information only.)"),
    "Cyrl": ("Версия для печати | Размер шрифта", "Источник: Управление Верховного комиссара ООН по правам человека",
             "(Перевод приводится только для информации.)"),
    "Arab": ("نسخة للطباعة | حجم الخط", "المصدر: مكتب المفوض السامي لحقوق الإنسان التابع للأمم المتحدة",
             "(الترجمة مقدمة للعلم فقط.)"),
    "Hani": ("打印版本 | 字体大小：大 中 小", "来源：联合国人权事务高级专员办事处", "（译文仅供参考。）"),
    "Jpan": ("印刷用ページ | 文字サイズ：大 中 小", "出典：国際連合人権高等弁務官事務所", "（翻訳は参考のためのものです。）"),
    "Hang": ("인쇄용 페이지 | 글자 크기: 크게 작게", "출처: 유엔 인권최고대표사무소", "(번역문은 참고용입니다.)"),
    "Thai": ("ฉบับพิมพ์ | ขนาดตัวอักษร", "ที่มา: สำนักงานข้าหลวงใหญ่สิทธิมนุษยชนแห่งสหประชาชาติ", "(คำแปลนี้เพื่อเป็นข้อมูลเท่านั้น)"),
    "other": ("Printable version | UDHR | Text size", "Source: OHCHR, Universal Declaration of Human Rights translations",
              "(Translation provided for information only.)"),
}
UDHR_SCRIPT = {"rus": "Cyrl", "ukr": "Cyrl", "bul": "Cyrl", "srp": "Cyrl", "arb": "Arab", "pes": "Arab", "urd": "Arab",
               "cmn": "Hani", "jpn": "Jpan", "kor": "Hang", "tha": "Thai", "heb": "other", "hin": "other",
               "ben": "other", "tam": "other", "tel": "other", "khm": "other", "lao": "other", "mya": "other",
               "kat": "other", "hye": "other", "amh": "other", "ell": "other"}


def build_udhr(rng: random.Random) -> list[dict]:
    """UDHR translations cut into pages; each page gets its script's header/footer lines and maybe an inline
    sentence."""
    texts = {}
    for row in read_jsonl(SHARED / "langid" / "udhr" / "udhr.jsonl"):
        texts.setdefault(row["iso6393"], row["text"])  # the first text of each language
    rows = []
    for lang in UDHR_LANGS:
        lines = content_lines(texts[lang])
        header, footer, inline = UDHR_POOL[UDHR_SCRIPT.get(lang, "Latn")]
        start = 0
        while start < len(lines):
            page = lines[start:start + rng.randint(6, 14)]
            start += len(page)
            planted = []
            if rng.random() < 0.4 and len(page) > 1:
                at = rng.randrange(len(page))
                page = page[:at] + [page[at] + " " + inline] + page[at + 1:]
                planted.append(inline)
            top = [header] if rng.random() < 0.5 else []
            bottom = [footer] if rng.random() < 0.5 else []
            rows.append({"id": f"udhr-{lang}-{start:04d}", "text": "\n".join(top + page + bottom),
                         "content": [line.removesuffix(" " + inline) for line in page],
                         "planted": top + bottom + planted})
    return rows


def heldout_pages(rng: random.Random) -> list[tuple[str, str]]:
    """(language, text) pages: English web samples, and pages of lingua sentences in zh, ja, de."""
    pages = []
    for path in sorted((WEB / "datajuicer_samples").glob("*.jsonl")):
        if path.stem != "alpaca-cot":
            pages += [("en", d["text"]) for d in read_jsonl(path) if len(d["text"]) > 200]
    pages += [("en", d["text"]) for d in read_jsonl(WEB / "dolma_cc_samples" / "provided" / "documents" / "000.json.gz")]
    for lang in ("zh", "ja", "de"):
        sentences = [s for s in (SHARED / "langid" / "lingua" / "sentences" / f"{lang}.txt").read_text().split("\n") if s]
        start = 0
        while start < len(sentences) - 12:
            n = rng.randint(6, 12)
            chunk = sentences[start:start + n]
            start += n
            joiner = "" if lang in ("zh", "ja") else " "
            cut = rng.randint(2, n - 2)  # two paragraphs of sentences, or one sentence a line
            text = "\n".join(chunk) if rng.random() < 0.5 else joiner.join(chunk[:cut]) + "\n" + joiner.join(chunk[cut:])
            pages.append((lang, text))
    return pages


def build_heldout(rng: random.Random) -> list[dict]:
    rows = []
    for i, (lang, page) in enumerate(heldout_pages(rng)):
        pool, year = HELDOUT[lang], str(rng.choice([2018, 2020, 2024]))
        lines = content_lines(page)
        planted = []
        if rng.random() < 0.6:  # a block at the bottom
            block = [b.format(year=year) for b in rng.choice(pool["blocks"])]
            lines, planted = lines + [""] + block, planted + block
        if rng.random() < 0.4 and len(lines) > 2:  # a single line somewhere in the middle
            line = rng.choice(pool["lines"]).format(year=year)
            at = rng.randint(1, len(lines) - 1)
            lines, planted = lines[:at] + [line] + lines[at:], planted + [line]
        if rng.random() < 0.4:  # a sentence appended to a content line
            sentence = rng.choice(pool["inline"])
            at = rng.randrange(len(content_lines(page)))
            target = content_lines(page)[at]
            joiner = "" if lang in ("zh", "ja") else " "
            lines = [line + joiner + sentence if line == target else line for line in lines]
            planted.append(sentence)
        rows.append({"id": f"held-{lang}-{i:04d}", "text": "\n".join(lines), "content": content_lines(page),
                     "planted": planted, "lang": lang})
    return rows


def write(rows: list[dict], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.jsonl", "w") as out, open(folder / "truth.jsonl", "w") as truth:
        for row in rows:
            out.write(json.dumps({"id": row["id"], "text": row["text"]}, ensure_ascii=False) + "\n")
            truth.write(json.dumps({k: row[k] for k in ("id", "content", "planted")}, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    write(build_web(random.Random(1301)), args.out / "web")
    write(build_udhr(random.Random(1303)), args.out / "udhr")
    write(build_heldout(random.Random(1302)), args.out / "heldout")


if __name__ == "__main__":
    main()
