"""Multi-turn conversations: each seed instruction opens a chat; the model answers, a simulated user (the same
model, prompted with the transcript) asks a follow-up, and so on for `turns` user turns.

Rows: `messages` (a list of {role, content}: the system prompt if given, then user/assistant in turn) and
`turns` (user turns), with provenance (`parent_id`, `gen_seed_id` = the seed row). Requests per row:
2 * turns - 1, sent a round at a time across all rows. A conversation whose request fails is rejected as
`failed_<kind>` (the detail names the turn); none is cut short silently.
"""

from __future__ import annotations

import polars as pl
from pydantic import Field

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import LLMGenerator, failed
from operators.generate.client import ChatRequest, LLMClient
from operators.generate.responses import instruction_prompt
from operators.registry import register

FOLLOW_UP = ("Here is a conversation between a user and an AI assistant:\n\n{transcript}\n\n"
             "Write the user's next message: a natural follow-up that builds on the assistant's last answer (a "
             "further question, a request for detail or an example, or a related task). Reply with the message "
             "only, in the user's voice, without any label.")
MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def transcript(messages: list[dict]) -> str:
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages if m["role"] != "system")


@register
class MultiTurn(LLMGenerator):
    """Multi-turn chats from seed instructions: assistant answers and simulated user follow-ups -> `messages`, `turns`."""

    name = "multi_turn"
    templates = (FOLLOW_UP,)

    class Params(Params):
        instruction_field: str = "instruction"
        input_field: str = Field(default="input", description="appended to the first message when present; '' for none")
        turns: int = Field(default=3, ge=1, le=20, description="user turns per conversation (the first is the seed)")
        system: str | None = Field(default=None, description="system prompt of every conversation")
        temperature: float = Field(default=0.7, ge=0, le=2)
        max_tokens: int = Field(default=512, ge=1, description="per assistant answer")
        user_max_tokens: int = Field(default=128, ge=1, description="per simulated user message")
        seed: int = 0

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p = self.params
        chats: dict[str, list[dict]] = {}
        for row in seeds.to_dicts():
            first = instruction_prompt(row, p.instruction_field, p.input_field)
            chats[row["id"]] = ([{"role": "system", "content": p.system}] if p.system else []) + [{"role": "user", "content": first}]
        broken: dict[str, dict] = {}
        for turn in range(1, p.turns + 1):
            self._round(chats, broken, client, turn, "assistant")
            if turn < p.turns:
                self._round(chats, broken, client, turn, "user")
        kept, rejected = [], []
        for sid, messages in chats.items():
            row = {"messages": messages, "turns": sum(m["role"] == "user" for m in messages)}
            row |= self.provenance(client, sid, parent_id=sid)
            (rejected if sid in broken else kept).append(row | broken.get(sid, {}))
        return Split(self._frame(kept), self._frame(rejected, rejects=True))

    def _round(self, chats: dict, broken: dict, client: LLMClient, turn: int, role: str) -> None:
        """One request per live conversation: the assistant's answer, or the simulated user's next message."""
        p = self.params
        live = [sid for sid in chats if sid not in broken]
        if role == "assistant":
            requests = [ChatRequest(tuple((m["role"], m["content"]) for m in chats[sid]), temperature=p.temperature,
                                    max_tokens=p.max_tokens, seed=p.seed, tag=sid) for sid in live]
        else:
            requests = [ChatRequest.user(FOLLOW_UP.format(transcript=transcript(chats[sid])), temperature=p.temperature,
                                         max_tokens=p.user_max_tokens, seed=p.seed + turn, tag=sid) for sid in live]
        for sid, answer in zip(live, client.complete(requests, step=self.name)):
            text = answer.text.strip() if answer.ok else ""
            if (reason := failed(answer)) is not None:
                broken[sid] = reason | {DETAIL: f"{role} turn {turn}: " + reason[DETAIL]}
            elif not text:
                broken[sid] = {REASON: f"empty_{role}_turn", DETAIL: f"turn {turn}"}
            else:
                chats[sid].append({"role": role, "content": text})

    def _frame(self, records: list[dict], rejects: bool = False) -> pl.DataFrame:
        frame = self.rejected(records) if rejects else self.rows(records)
        return frame.with_columns(pl.col("messages").cast(MESSAGES)) if "messages" in frame.columns else frame
