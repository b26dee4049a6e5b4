"""Rebuild data/quality/languages.json: per-language parameters of the Gopher and FineWeb rules, taken from
FineWeb-2's published per-language configs (Apache-2.0; huggingface/fineweb-2 `configs/{iso3}_{script}.yml`).

    python data/quality/build.py PATH_TO_A_FINEWEB_2_CHECKOUT_OR_GIT_DIR

FineWeb-2 derived each value from the language's own statistics on reference text (stop words: the language's
most frequent words; thresholds: the point of the language's own distribution of a metric that corresponds to
where the English threshold sits), so these are published calibrations, not numbers fitted to our test sets.
English is not in the table: English rows use the operators' own parameters (datatrove's English defaults).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

# lid.176 code (what the langid stage writes) -> FineWeb-2 config. The 30 most used languages on the web
# (Common Crawl) that FineWeb-2 calibrated, English aside.
CONFIGS = {
    "zh": "cmn_Hani", "ja": "jpn_Jpan", "de": "deu_Latn", "ru": "rus_Cyrl", "es": "spa_Latn", "fr": "fra_Latn",
    "it": "ita_Latn", "pt": "por_Latn", "nl": "nld_Latn", "pl": "pol_Latn", "tr": "tur_Latn", "vi": "vie_Latn",
    "id": "ind_Latn", "cs": "ces_Latn", "ko": "kor_Hang", "uk": "ukr_Cyrl", "sv": "swe_Latn", "ar": "arb_Arab",
    "hu": "hun_Latn", "ro": "ron_Latn", "el": "ell_Grek", "da": "dan_Latn", "fi": "fin_Latn", "th": "tha_Thai",
    "bg": "bul_Cyrl", "he": "heb_Hebr", "hi": "hin_Deva", "bn": "ben_Beng", "ms": "zsm_Latn", "sk": "slk_Latn",
}
# Languages written without spaces: our words are their characters (operators/quality/tokenize.py), so a mean
# word length measured with FineWeb-2's word segmenters does not apply to them.
UNSPACED = {"zh", "ja", "th"}
# FineWeb-2 split Korean into morphemes: its stop words are particles ("의", "는") that our words (the
# space-separated eojeol, as in the Korean text itself) never are.
MORPHEMES = {"ko"}


def read_config(source: Path, name: str) -> dict:
    path = source / "configs" / f"{name}.yml"
    if path.exists():
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    text = subprocess.run(["git", f"--git-dir={source}", "show", f"HEAD:configs/{name}.yml"], check=True,
                          capture_output=True, text=True).stdout
    return yaml.safe_load(text)


def entry(lang: str, config: dict) -> dict:
    """Our parameter names (operators/quality/gopher.py, web.py) for one FineWeb-2 config."""
    gopher = {"min_alpha_words_ratio": config["max_non_alpha_words_ratio"]}
    if lang not in UNSPACED:
        gopher |= {"stop_words": config["stopwords"]} if lang not in MORPHEMES else {}
        gopher |= {"min_mean_word_length": config["min_avg_word_length"],
                   "max_mean_word_length": config["max_avg_word_length"]}
    elif len(single := [w for w in config["stopwords"] if len(w) == 1]) >= 8:  # our words there are characters
        gopher["stop_words"] = single
    return {
        "fineweb2_config": config_name(lang),
        "gopher_quality": gopher,
        "gopher_repetition": {"dup_line_frac": config["dup_line_frac"],
                              "top_ngrams": {str(n): v for n, v in config["top_n_grams"]},
                              "dup_ngrams": {str(n): v for n, v in config["dup_n_grams"]}},
        "fineweb": {"min_line_punct_ratio": config["line_punct_thr"], "max_newline_ratio": config["new_line_ratio"]},
    }


def config_name(lang: str) -> str:
    return CONFIGS[lang]


def main() -> None:
    source = Path(sys.argv[1])
    table = {lang: entry(lang, read_config(source, name)) for lang, name in CONFIGS.items()}
    out = Path(__file__).with_name("languages.json")
    out.write_text(json.dumps(table, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{out}: {len(table)} languages")


if __name__ == "__main__":
    main()
