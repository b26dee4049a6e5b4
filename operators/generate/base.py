"""What every generator shares: the `run` contract, provenance columns, stable ids, the template hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl

from operators.base import DETAIL, REASON, Generator, Split
from operators.generate.client import Completion, LLMClient
from operators.generate.failures import Failure

PROVENANCE = ["source", "gen_model", "gen_template", "gen_params", "gen_seed_id", "parent_id"]


class LLMGenerator(Generator):
    """A generator whose `run` returns the new rows and the rejected candidates (with `reason`, `detail`).

    Books: every candidate a generator considers (a parsed instruction, an answer per seed row and sample)
    ends as a kept row or a rejected one; a candidate whose request failed is rejected as `failed_<kind>`
    and the client's failures table holds the request hash. Seeds are inputs, not rows of the output."""

    templates: tuple[str, ...] = ()  # the prompt templates, hashed into gen_template

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        raise NotImplementedError

    def generate(self, seeds: pl.DataFrame, client: LLMClient) -> pl.DataFrame:
        return self.run(seeds, client).kept

    @property
    def template_hash(self) -> str:
        return hashlib.sha256("\x00".join(self.templates).encode()).hexdigest()[:16]

    def provenance(self, client: LLMClient, seed_id: str | None, parent_id: str | None = None) -> dict[str, Any]:
        return {"source": f"generated:{self.name}", "gen_model": client.model, "gen_template": self.template_hash,
                "gen_params": json.dumps(self.params.model_dump(mode="json"), sort_keys=True),
                "gen_seed_id": seed_id, "parent_id": parent_id}

    def rows(self, records: list[dict[str, Any]]) -> pl.DataFrame:
        """Records -> a frame with a stable content-hash `id` first (same content, same id); a record may
        bring its own as `_id` (when other rows already refer to it)."""
        for r in records:
            own = r.pop("_id", None)
            r["id"] = own or row_id(self.name, r)
        frame = pl.DataFrame(records, infer_schema_length=None) if records else pl.DataFrame({"id": []}, schema={"id": pl.String})
        return frame.select("id", pl.exclude("id"))

    def rejected(self, records: list[dict[str, Any]]) -> pl.DataFrame:
        """Rejected candidates: each record carries `reason` and `detail`."""
        frame = self.rows(records)
        if not len(frame):
            return frame.with_columns(pl.lit(None, pl.String).alias(REASON), pl.lit(None, pl.String).alias(DETAIL))
        return frame.with_columns(pl.col(REASON).cast(pl.String), pl.col(DETAIL).cast(pl.String))


def row_id(op: str, record: dict[str, Any]) -> str:
    payload = json.dumps({k: v for k, v in record.items() if k != "id"}, sort_keys=True, default=str)
    return f"{op}-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def failed(answer: Completion | Failure) -> dict[str, str] | None:
    """The reject reason/detail of a failed answer, or None when it succeeded."""
    if answer.ok:
        return None
    return {REASON: f"failed_{answer.kind}", DETAIL: f"request {answer.request_hash[:16]}: {answer.message[:160]}"}
