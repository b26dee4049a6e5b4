"""Personal data and secrets: find them with patterns plus a check per kind, replace them with placeholders.

Kinds (placeholder): e-mail addresses (<EMAIL>), phone numbers in international and national formats
(<PHONE>), public IPv4/IPv6 addresses (<IP_ADDRESS>), payment card numbers that pass Luhn (<CARD>), IBANs that
pass their mod-97 check (<IBAN>), secrets: cloud keys and service tokens (<SECRET>), private key blocks
(<PRIVATE_KEY>). Harmless look-alikes stay: example.com/.org/.net addresses, loopback/private/documentation
IPs (127.0.0.1, 10.x, 192.0.2.x), version numbers, dates, ISBNs, numbers that fail their checksum.

Patterns use ASCII boundaries (not `\\b`), so an address glued to Chinese or Japanese text is still found.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Literal

import polars as pl
from pydantic import Field

from operators.base import Params, RowOperator, Split, _no_rejects, _with_reason
from operators.registry import register

Kind = Literal["email", "phone", "ip_address", "card", "iban", "secret", "private_key"]
KINDS: tuple[Kind, ...] = ("private_key", "secret", "email", "iban", "card", "ip_address", "phone")  # match order
PLACEHOLDERS = {k: f"<{k.upper()}>" for k in KINDS}

# --- e-mail -------------------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
    r"\s?(?:@|\[at\]|\(at\)|\{at\}|＠)\s?"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.|\s?(?:\[dot\]|\(dot\))\s?))+[A-Za-z]{2,24})"
    r"(?![A-Za-z0-9-])", re.IGNORECASE)
_EXAMPLE_DOMAINS = re.compile(r"(^|\.)(example\.(com|org|net)|example|test|invalid|localhost)$", re.IGNORECASE)


def _email_ok(match: re.Match) -> bool:
    domain = re.sub(r"\s?(\[dot\]|\(dot\))\s?", ".", match.group(1), flags=re.IGNORECASE)
    return not _EXAMPLE_DOMAINS.search(domain)


# --- phone numbers --------------------------------------------------------------------------------------------
_SEP = r"[ \u00a0.\-/]?"
_EXTENSION = r"(?:\s?(?:x|ext\.?|доб\.?)\s?\d{1,6})?"
_PHONE = re.compile(
    r"(?<![A-Za-z0-9+.\-/])(?:(?:"
    r"\+\s?\d{1,3}" + _SEP + r"(?:\(0?\d{1,4}\)" + _SEP + r")?\d{1,5}(?:" + _SEP + r"\d{1,5}){1,5}"  # +44 20 7946 0958
    r"|00\d{1,3}[ .\-]\d{1,5}(?:[ .\-]\d{1,5}){1,5}"  # 0044 20 7946 0958
    r"|\(\d{2,5}\)" + _SEP + r"\d{2,5}(?:" + _SEP + r"\d{2,5}){1,3}"  # (212) 555-0187, (030) 1234567
    r"|\d{3}[.\- ]\d{3}[.\- ]\d{4}"  # 212-555-0187
    r"|0\d{1,4}(?:[ .\-/]\d{2,8}){1,4}|0\d{9,10}"  # 020 7946 0958, 06 12 34 56 78, 030/1234567, 0811049745
    r"|8[ \-]?\(\d{3,5}\)[ \-]?\d{1,3}(?:[ \-]?\d{2,4}){1,3}|8[ \-]\d{3}[ \-]\d{3}[ \-]\d{2}[ \-]?\d{2}"  # 8 (495) 123-45-67
    r"|\d{2,3}-\d{3,4}-\d{4}"  # 75-1361-3412
    r"|1[3-9]\d(?:[ \-]?\d{4}){2}"  # Chinese mobiles 138 0013 8000
    r")" + _EXTENSION + r")(?![A-Za-z0-9]|[.\-/]\d)", re.ASCII)  # ASCII: \d is 0-9, not Thai or Arabic digits
# words that announce a phone number: whole words in alphabetic scripts ("tel" is not inside "hotel"), any
# position in Chinese and Japanese
_PHONE_WORD = (r"(?:(?<![^\W\d_])(?i:telephone|téléphone|teléfono|telefon|tel|phone|mobile|cell|fax|call|whatsapp|"
               r"телефон|тел)(?![^\W\d_])|電話|电话|手机|手機)")
_PHONE_CONTEXT = re.compile(_PHONE_WORD + r"\.?\s*[:：]?\s*(?a:(\+?\d[\d \-.]{5,18}\d))(?![A-Za-z0-9])")
# starts with a date and a space or nothing after it: 2024-01-15, 15.01.2024, 04-26-2011 10:11
_DATE = re.compile(r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?:$|[ T])", re.ASCII)


_TIME_RANGE = re.compile(r"(?:[01]\d|2[0-3])[.:]?[0-5]\d ?- ?(?:[01]\d|2[0-3])[.:]?[0-5]\d")  # 0900-1530, 09.00-12.00
_CATALOGUE = re.compile(r"(?<![A-Za-z])[A-Z]{2,5} $")  # IRAS 05264-6347, ESO 111-12: an all-caps code before


def _phone_ok(match: re.Match) -> bool:
    if match.re is _PHONE_CONTEXT:  # "tel: 555 1234": the word says what it is
        return 7 <= len(re.sub(r"\D", "", match.group(1))) <= 15 and not _DATE.match(match.group(1))
    text = match.group(0)
    digits = re.sub(r"\D", "", re.sub(r"(?:x|ext\.?|доб\.?)\s?\d+$", "", text))
    if not 8 <= len(digits) <= 15 or _DATE.match(text):
        return False
    before = match.string[max(0, match.start() - 12):match.start()]
    if re.search(r"(?i:isbn|issn|doi)\W*$", before) or (_CATALOGUE.search(before) and not re.search(_PHONE_WORD, before)):
        return False
    if text.startswith(("+", "00")):
        return True
    if _TIME_RANGE.fullmatch(text):
        return False
    return len(set(digits)) > 2  # 000-000-0000 and the like are placeholders already


# --- IP addresses ---------------------------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![A-Za-z0-9.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![A-Za-z0-9]|\.\d)", re.ASCII)
_IPV6 = re.compile(r"(?<![A-Za-z0-9:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%[A-Za-z0-9]+)?(?![A-Za-z0-9:])")
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|version|ver\.?|release|build|firmware|release)\s*$")


def _ip_ok(match: re.Match) -> bool:
    if re.fullmatch(r"\d\.\d\.\d\.\d", match.group(0)):  # 1.2.1.9: a section or version number (and 8.8.8.8 is nobody's)
        return False
    try:
        address = ipaddress.ip_address(match.group(0).split("%")[0])
    except ValueError:
        return False
    before = match.string[max(0, match.start() - 12):match.start()]
    return address.is_global and not _VERSION_BEFORE.search(before)


# --- payment cards, IBANs -------------------------------------------------------------------------------------
_CARD = re.compile(r"(?<![A-Za-z0-9.\-])(?:\d[ \-]?){12,18}\d(?![A-Za-z0-9]|[.\-]\d)", re.ASCII)
# issuer prefixes and their card lengths: Visa (13-digit ones are long retired; EAN-13 barcodes look like them),
# Mastercard, Amex, Diners, Discover, JCB, UnionPay
_CARD_SHAPES = [(re.compile(r"4"), (16, 19)), (re.compile(r"5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)"), (16,)),
                (re.compile(r"3[47]"), (15,)), (re.compile(r"3(?:0[0-5]|[689])"), (14, 15, 16, 17, 18, 19)),
                (re.compile(r"6(?:011|4[4-9]|5)"), (16, 17, 18, 19)), (re.compile(r"35"), (16, 17, 18, 19)),
                (re.compile(r"62"), (16, 17, 18, 19))]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(match: re.Match) -> tuple[int, int] | None:
    """The longest run of the match's digit groups that is a card (the pattern may have taken a number
    before or after it, as in "2 4111 1111 1111 1111 10")."""
    before = match.string[max(0, match.start() - 12):match.start()].lower()
    if "isbn" in before or re.search(_PHONE_WORD, before):
        return None
    groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", match.group(0))]
    for i in range(len(groups)):
        for j in range(len(groups), i, -1):
            digits = re.sub(r"\D", "", match.group(0)[groups[i][0]:groups[j - 1][1]])
            if _card_grouping([e - s for s, e in groups[i:j]]) and _is_card(digits):
                return match.start() + groups[i][0], match.start() + groups[j - 1][1]
    return None


def _card_grouping(sizes: list[int]) -> bool:
    """How cards are written: unbroken, in fours (the last group may be shorter), or 4-6-5 / 4-6-4."""
    return len(sizes) == 1 or all(n == 4 for n in sizes[:-1]) or sizes in ([4, 6, 5], [4, 6, 4])


def _is_card(digits: str) -> bool:
    shape_ok = any(prefix.match(digits) and len(digits) in lengths for prefix, lengths in _CARD_SHAPES)
    return shape_ok and len(set(digits)) > 1 and luhn_ok(digits)


# Lengths by country (ISO 13616 registry): a wrong length is not an IBAN even when mod 97 passes.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{2,4}){3,8}(?![A-Za-z0-9])", re.ASCII)


def iban_ok(text: str) -> bool:
    code = re.sub(r"[ \-]", "", text).upper()
    if IBAN_LENGTHS.get(code[:2]) != len(code):
        return False
    moved = code[4:] + code[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _iban_ok(match: re.Match) -> tuple[int, int] | None:
    """The IBAN at the start of the match, cut at its country's length (the pattern may run on into the next
    word or number)."""
    text = match.group(0)
    length = IBAN_LENGTHS.get(text[:2])
    if length is None:
        return None
    taken = 0
    for end, ch in enumerate(text, start=1):
        taken += ch.isalnum()
        if taken == length:
            at_boundary = end == len(text) or not text[end].isalnum()
            return (match.start(), match.start() + end) if at_boundary and iban_ok(text[:end]) else None
    return None


# --- secrets --------------------------------------------------------------------------------------------------
_SECRET = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API key
    r"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255}"  # GitHub
    r"|glpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{24,}"  # Stripe
    r"|sk-(?:proj-|svcacct-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{32,}"  # OpenAI, Anthropic
    r"|hf_[A-Za-z0-9]{34,}"  # Hugging Face
    r"|npm_[A-Za-z0-9]{36}"  # npm
    r"|SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}"  # SendGrid
    r"|eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"  # JSON web tokens
    r"|https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}"  # Slack webhooks
    r")(?![A-Za-z0-9])"
    r"|(?i:aws_?secret_?access_?key|secret_?key|client_?secret|api_?key|access_?token|auth_?token|password)"
    r"[\"']?\s*[:=]\s*[\"']?(?P<value>[A-Za-z0-9/+_\-]{20,})"  # key = value in configs and code
    r"|AccountKey=(?P<azure>[A-Za-z0-9+/]{86}==)")  # Azure storage
_PRIVATE_KEY = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----.*?-----END \1-----", re.DOTALL)


def _secret_ok(match: re.Match) -> bool:
    value = match.group("value")
    if value is None:
        return True
    # a key = value pair: only a value that looks random (letters and digits mixed), not `password = changeme`
    return bool(re.search(r"\d", value) and re.search(r"[A-Za-z]", value)) and not value.lower().startswith("your")


def _always(match: re.Match) -> bool:
    return True


# a check says no (None/False), yes (True: the whole match) or which part (start, end) is the item
RULES: dict[Kind, tuple[re.Pattern, Callable[[re.Match], bool | tuple[int, int] | None]]] = {
    "private_key": (_PRIVATE_KEY, _always), "secret": (_SECRET, _secret_ok), "email": (_EMAIL, _email_ok),
    "iban": (_IBAN, _iban_ok), "card": (_CARD, _card_ok), "ip_address": (_IPV4, _ip_ok), "phone": (_PHONE, _phone_ok),
}


def find_pii(text: str, kinds: tuple[str, ...] = KINDS) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, kind) spans, earlier kinds in `KINDS` winning overlaps."""
    spans: list[tuple[int, int, str]] = []
    # digits inside an IBAN-shaped code that fails its check are not a card or a phone either
    codes = [m.span() for m in _IBAN.finditer(text)] if "card" in kinds or "phone" in kinds else []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e, _ in spans)

    def in_code(start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in codes)

    for kind in KINDS:
        if kind not in kinds:
            continue
        pattern, ok = RULES[kind]
        matches = list(pattern.finditer(text))
        if kind == "ip_address":
            matches += list(_IPV6.finditer(text))
        if kind == "phone":
            matches += list(_PHONE_CONTEXT.finditer(text))
        for m in matches:
            accepted = ok(m)
            if not accepted:
                continue
            start, end = accepted if isinstance(accepted, tuple) else _span(m, kind)
            if free(start, end) and not (kind in ("card", "phone") and in_code(start, end)):
                spans.append((start, end, kind))
    return sorted(spans)


def _span(match: re.Match, kind: str) -> tuple[int, int]:
    """The part to replace: for `key = value` secrets and `tel: 5551234` phones, the value only."""
    for group in ("value", "azure"):
        if kind == "secret" and match.group(group):
            return match.span(group)
    if kind == "phone" and match.re is _PHONE_CONTEXT:
        return match.span(1)
    return match.span()


def redact(text: str, spans: list[tuple[int, int, str]], placeholders: dict[str, str]) -> str:
    out, last = [], 0
    for start, end, kind in spans:
        out.append(text[last:start])
        out.append(placeholders[kind])
        last = end
    out.append(text[last:])
    return "".join(out)


@register
class PiiRedact(RowOperator):
    """E-mails, phones, IPs, cards (Luhn), IBANs (mod 97), secrets and private keys -> <PLACEHOLDERS>, or drop."""

    name = "pii_redact"

    class Params(Params):
        fields: list[str] = Field(default=["text"], min_length=1, description="string columns to scan")
        kinds: list[Kind] = Field(default=list(KINDS), min_length=1, description="what to find")
        action: Literal["redact", "drop"] = Field(
            default="redact", description="redact: replace with <KIND>; drop: reject rows that have any")

    def columns(self) -> dict[str, str]:
        return {"pii": f"personal data found per kind ({', '.join(self.params.kinds)}), before redaction"}

    def process(self, batch: pl.DataFrame) -> Split:
        p = self.params
        kinds = tuple(p.kinds)
        counts = {k: [0] * len(batch) for k in kinds}
        columns = {}
        for field in p.fields:
            values = batch[field].to_list()
            new = []
            for row, text in enumerate(values):
                spans = find_pii(text, kinds) if text else []
                for _, _, kind in spans:
                    counts[kind][row] += 1
                new.append(redact(text, spans, PLACEHOLDERS) if spans else text)
            columns[field] = pl.Series(field, new, dtype=pl.String)
        pii = pl.DataFrame({k: pl.Series(k, v, dtype=pl.UInt32) for k, v in counts.items()}).to_struct("pii")
        found = pl.Series([sum(c[row] for c in counts.values()) > 0 for row in range(len(batch))], dtype=pl.Boolean)
        if p.action == "redact":
            return Split(batch.with_columns(*columns.values(), pii), _no_rejects(batch))
        marked = batch.with_columns(pii)
        detail = pl.concat_str([pl.format(f"{k}={{}}", pl.col("pii").struct.field(k)) for k in kinds], separator=" ")
        rejected = marked.filter(found)
        return Split(marked.filter(~found), _with_reason(rejected, "contains_pii", pl.lit(rejected.select(detail).to_series())))

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        """Items found per kind, and rows with any, in the rows kept (redacted) and dropped."""
        out = {}
        for side, frame in (("kept", kept), ("dropped", rejected)):
            if "pii" not in frame.collect_schema():
                continue
            table = frame.select(pl.col("pii").struct.unnest()).collect()
            out[f"found_{side}"] = {k: int(table[k].sum()) for k in table.columns}
            out[f"rows_with_pii_{side}"] = int(table.select(pl.sum_horizontal(pl.all()) > 0).to_series().sum())
        return out
