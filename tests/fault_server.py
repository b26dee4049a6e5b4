"""A small OpenAI-compatible chat server on loopback that misbehaves on demand.

Faults are asked for inside the last user message, so each test request says what should happen to it:
    [429x2@0.2]  answer 429 with Retry-After: 0.2 to the first 2 attempts, then answer normally
    [500x1]      a 500 once          [slow@3]  wait 3 s before answering   [drop]  close without answering
    [cutbody]    headers promise more body than is sent      [badjson]  a 200 whose body is not JSON
    [length]     finish_reason=length                        [refuse]   the `refusal` field is set
`xN` limits a fault to the first N attempts of that message (default: every attempt); `@S` is its seconds.
Otherwise the answer is `responder(messages, body)` (default: an echo of the last user message).

Runs in a thread of the test process (`with FaultServer() as server: server.url`) or on its own:
`python tests/fault_server.py PORT` (the zero-latency peer of the client benchmark).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable

FAULT = re.compile(r"\[(\d{3}|[a-z]+)(?:x(\d+))?(?:@([\d.]+))?\]")


def echo(messages: list[dict], body: dict) -> str:
    return "echo: " + messages[-1]["content"]


class FaultServer:
    def __init__(self, responder: Callable[[list[dict], dict], str] = echo, port: int = 0) -> None:
        self.responder, self.port = responder, port
        self.attempts: Counter = Counter()  # last user message -> attempts seen
        self.calls = 0
        self.in_flight = self.max_in_flight = 0  # concurrent chat requests (now / the most seen)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultServer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:] if ":" in h)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if not await self._answer(lines[0], headers, json.loads(body or b"{}"), writer):
                    break
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass  # client went away, or the server is stopping
        finally:
            writer.close()

    async def _answer(self, request_line: str, headers: dict[str, str], body: dict,
                      writer: asyncio.StreamWriter) -> bool:
        """Answer one request (a subclass may look at its headers first); False when the connection must close."""
        return await self._respond(request_line, body, writer)

    async def _respond(self, request_line: str, body: dict, writer: asyncio.StreamWriter) -> bool:
        """Write one response; False when the connection must close."""
        self.calls += 1
        if "/chat/completions" not in request_line:
            self._send(writer, 200, json.dumps({"object": "list", "data": [{"id": "fault", "object": "model"}]}))
            return True
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat(body, writer)
        finally:
            self.in_flight -= 1

    async def _chat(self, body: dict, writer: asyncio.StreamWriter) -> bool:
        messages = body.get("messages", [])
        text = messages[-1]["content"] if messages else ""
        self.attempts[text] += 1
        attempt = self.attempts[text]
        finish, refusal = "stop", None
        for name, times, arg in FAULT.findall(text):
            if times and attempt > int(times):
                continue
            seconds = float(arg) if arg else 0.0
            if name == "429":
                self._send(writer, 429, '{"error": {"message": "slow down"}}', {"Retry-After": arg or "0"})
                return True
            if name == "500":
                self._send(writer, 500, '{"error": {"message": "boom"}}')
                return True
            if name == "slow":
                await asyncio.sleep(seconds)
            elif name == "drop":
                return False
            elif name == "cutbody":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"id\":")
                await writer.drain()
                return False
            elif name == "badjson":
                self._send(writer, 200, "{this is not json")
                return True
            elif name == "length":
                finish = "length"
            elif name == "refuse":
                refusal = "I will not help with that."
        content = self.responder(messages, body)
        self._send(writer, 200, json.dumps(_completion(body, content, finish, refusal)))
        return True

    @staticmethod
    def _send(writer: asyncio.StreamWriter, status: int, payload: str, headers: dict | None = None) -> None:
        data = payload.encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                     f"{extra}\r\n".encode() + data)


def _completion(body: dict, content: str, finish: str, refusal: str | None) -> dict:
    prompt_tokens = sum(len(m.get("content", "").split()) for m in body.get("messages", []))
    return {
        "id": "chatcmpl-fault", "object": "chat.completion", "created": 0, "model": body.get("model", "fault"),
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content.split()),
                  "total_tokens": prompt_tokens + len(content.split())},
    }


if __name__ == "__main__":
    with FaultServer(port=int(sys.argv[1])) as server:
        print(f"fault server on {server.url}", flush=True)
        threading.Event().wait()
