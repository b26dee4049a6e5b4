"""Presidio's recognisers on the labelled sets (peer venv): spans per document as JSON lines.

Pattern recognisers only (e-mail, phone via `phonenumbers`, IP, credit card, IBAN), called directly with no NLP
engine: Presidio's AnalyzerEngine wants a spaCy model, and the only ones on PyPI are third-party re-uploads.
Presidio has no recogniser for API keys or private keys, so those kinds are n/a for it.

    /tmp/pii-venv/bin/python bench/pii/presidio_side.py /tmp/pii-sets [SET ...]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                      IpRecognizer, PhoneRecognizer)

KIND = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "IP_ADDRESS": "ip_address", "CREDIT_CARD": "card",
        "IBAN_CODE": "iban"}
# every region Presidio's phone recogniser can be told about that our sets use
REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "BR", "RU", "CN", "JP", "KR", "IN", "IL", "CA", "AU", "MX",
           "AT", "CH", "CZ", "SE", "TR", "UA", "VN", "TH", "ID", "TW", "FI")


def main() -> None:
    folder = Path(sys.argv[1])
    recognizers = [EmailRecognizer(), PhoneRecognizer(supported_regions=REGIONS), IpRecognizer(),
                   CreditCardRecognizer(), IbanRecognizer()]
    for name in sys.argv[2:] or ("dev", "heldout", "heldout2", "lookalike", "clean"):
        path = folder / f"{name}.jsonl"
        if not path.exists():
            continue
        start, n = time.perf_counter(), 0
        with open(folder / f"{name}.presidio.jsonl", "w") as out:
            for line in path.open():
                doc = json.loads(line)
                spans = []
                for rec in recognizers:
                    for r in rec.analyze(doc["text"], entities=rec.supported_entities, nlp_artifacts=None) or []:
                        if r.score > 0:
                            spans.append([r.start, r.end, KIND[r.entity_type]])
                out.write(json.dumps({"id": doc["id"], "spans": spans}) + "\n")
                n += 1
        print(name, n, f"{time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
