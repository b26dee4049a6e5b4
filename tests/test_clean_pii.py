"""pii_redact: items planted in real sentences (English, Chinese, German, Russian), look-alikes left alone."""

from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import SHARED
from operators.clean.pii import PiiRedact, find_pii, iban_ok, luhn_ok

SENTENCES = SHARED / "langid" / "lingua" / "sentences"
PLANTED = {
    "email": ["li.wei@163.com", "jana.novak+news@seznam.cz", "o'brien@mail.ie".replace("'", ""), "ivan [at] yandex [dot] ru"],
    "phone": ["+44 20 7946 0958", "(212) 555-0187", "+86 138 0013 8000", "13912345678", "030/12345678",
              "06 12 34 56 78", "+7 (495) 123-45-67", "0049 30 901820"],
    "ip_address": ["81.2.69.160", "93.184.216.34", "2001:4860:4860::8888"],
    "card": ["4539 1488 0343 6467", "5500-0000-0000-0004", "378282246310005", "6011000990139424"],
    "iban": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606"],
    "secret": ["AKIAIOSFODNN7EXAMPLE", "ghp_R8fK2mQ9xLw3Tz7Vb1Nc5Hd4Js6Pa0Ye2Ui8", "sk-proj-" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY",
               "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"],
}
LOOK_ALIKES = ["version 1.2.3.4", "v2.10.3", "2024-01-15", "15.01.2024", "ISBN 978-3-16-148410-0", "info@example.com",
               "127.0.0.1", "192.168.1.20", "10.0.0.1", "2001:db8::1", "12:30:45", "4111 1111 1111 1112",
               "DE89 3704 0044 0532 0130 01", "1,234,567", "1999-2004", "section 1.2.1.9", "open 0900-1530", "IRAS 05264-6347", "00:1A:2B:3C:4D:5E", "+/- 5%", "3.14159265358979"]


def sentences(lang: str) -> list[str]:
    return (SENTENCES / f"{lang}.txt").read_text().splitlines()


@pytest.mark.parametrize("lang", ["en", "zh", "de", "ru"])
def test_planted_items_become_placeholders_in_four_languages(lang):
    lines = sentences(lang)
    glue = "，" if lang == "zh" else " "
    rows, expected = [], []
    for i, (kind, items) in enumerate((k, v) for k, v in PLANTED.items()):
        for j, item in enumerate(items):
            rows.append(f"{lines[i * 10 + j]}{glue}{item}{glue}{lines[i * 10 + j + 1]}")
            expected.append(f"{lines[i * 10 + j]}{glue}<{kind.upper()}>{glue}{lines[i * 10 + j + 1]}")
    batch = pl.DataFrame({"id": [str(i) for i in range(len(rows))], "text": rows})
    kept, rejected = PiiRedact().process(batch)
    assert rejected.is_empty()
    assert kept["text"].to_list() == expected
    counts = kept["pii"].struct.unnest().sum().row(0, named=True)
    assert counts == {k: len(PLANTED.get(k, [])) for k in counts} | {"private_key": 0}


@pytest.mark.parametrize("lang", ["en", "zh", "fr"])
def test_look_alikes_and_real_sentences_are_left_alone(lang):
    lines = [line for line in sentences(lang)[:200] if "@" not in line]  # en has a real address (found: a hit)
    text = "\n".join(f"{line} {alike}" for line, alike in zip(lines, LOOK_ALIKES * 20))
    assert find_pii(text) == []


def test_real_web_text_without_contact_details_is_unchanged():
    path = SHARED / "web" / "datajuicer_samples" / "arxiv.jsonl"
    texts = [json.loads(line)["text"] for line in path.open()]
    assert [t for t in texts if find_pii(t)] == []


def test_items_glued_to_chinese_characters():
    text = "请联系张伟zhangwei@163.com或拨打电话13800138000了解详情，服务器地址是93.184.216.34而不是127.0.0.1。"
    assert PiiRedact().process(pl.DataFrame({"id": ["z"], "text": [text]})).kept["text"][0] == (
        "请联系张伟<EMAIL>或拨打电话<PHONE>了解详情，服务器地址是<IP_ADDRESS>而不是127.0.0.1。")


def test_private_key_block_and_key_value_secrets():
    text = ("config:\n  aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n  password: changeme\n"
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n")
    kept = PiiRedact().process(pl.DataFrame({"id": ["k"], "text": [text]})).kept
    assert kept["text"][0] == "config:\n  aws_secret_access_key = <SECRET>\n  password: changeme\n<PRIVATE_KEY>\n"


def test_drop_action_rejects_rows_with_pii_and_says_what():
    batch = pl.DataFrame({"id": ["a", "b"], "text": ["Write to li.wei@163.com or call +44 20 7946 0958", "Nothing here, 2024."]})
    op = PiiRedact(action="drop", kinds=["email", "phone"])
    kept, rejected = op.process(batch)
    assert kept["id"].to_list() == ["b"] and rejected["reason"].to_list() == ["contains_pii"]
    assert rejected["detail"][0] == "email=1 phone=1" and rejected["text"][0] == batch["text"][0]
    stats = op.stats(kept.lazy(), rejected.lazy())
    assert stats["found_dropped"] == {"email": 1, "phone": 1} and stats["rows_with_pii_kept"] == 0


def test_checksums():
    assert luhn_ok("4539148803436467") and not luhn_ok("4539148803436468")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")
