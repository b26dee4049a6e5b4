"""Typed failures: what is left after retries becomes a row in the failures table, never a None in the data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import polars as pl


class FailureKind(StrEnum):
    TRANSPORT = "transport"          # connection refused/dropped, unreadable HTTP
    TIMEOUT = "timeout"              # no answer within the request timeout
    RATE_LIMITED = "rate_limited"    # 429 after every retry
    SERVER_ERROR = "server_error"    # 5xx, or a 2xx body that is not a chat completion
    BAD_REQUEST = "bad_request"      # other 4xx: the request itself is wrong (retrying cannot help)
    TRUNCATED = "truncated"          # finish_reason=length: the answer was cut off
    REFUSAL = "refusal"              # the model declined (refusal field, content filter, "I'm sorry, but I can't")
    PARSE_ERROR = "parse_error"      # a JSON answer was asked for and none could be recovered
    EXPIRED = "expired"              # a batch ended (expired, cancelled, failed) without answering it, every time


# Worth another attempt: the same request may succeed later. The rest are answers, cached and final.
RETRYABLE = frozenset({FailureKind.TRANSPORT, FailureKind.TIMEOUT, FailureKind.RATE_LIMITED, FailureKind.SERVER_ERROR})

FAILURE_SCHEMA = {"request_hash": pl.String, "kind": pl.String, "message": pl.String, "attempts": pl.Int64,
                  "tag": pl.String, "step": pl.String}


@dataclass(frozen=True)
class Failure:
    """A request that produced no usable answer. `tag` names what it was for (e.g. the seed row id)."""

    request_hash: str
    kind: FailureKind
    message: str
    attempts: int
    tag: str = ""
    step: str = ""

    ok = False


def failures_frame(failures: list[Failure]) -> pl.DataFrame:
    rows = [asdict(f) | {"kind": str(f.kind)} for f in failures]
    return pl.DataFrame(rows, schema=FAILURE_SCHEMA)
