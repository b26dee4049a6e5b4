"""A loopback server for OpenAI's Batch API: POST /v1/files (multipart upload), GET /v1/files/{id}/content,
POST /v1/batches, GET /v1/batches/{id}. A batch ends after `polls` status checks; faults on demand:
- in a request's last user message (or raw prompt): `[fail400]` -> a line in the error file with status 400;
  `[fail500]` -> status 500 on its first batch only; `[expire]` -> its first batch expires before answering it;
- `flaky`: {"POST /v1/files": 2, ...} -> that many 500s from an endpoint before it works.
Answers are `responder(body)` (default: an echo), with word counts as token usage.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def echo(body: dict) -> str:
    return "echo: " + (body["messages"][-1]["content"] if "messages" in body else body["prompt"])


class BatchServer:
    def __init__(self, responder=echo, polls: int = 2, flaky: dict[str, int] | None = None) -> None:
        self.responder, self.polls, self.flaky = responder, polls, Counter(flaky or {})
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.seen: Counter = Counter()  # custom_id -> batches it was in
        self.counts: Counter = Counter()  # "POST /v1/batches" -> calls (successful or not)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> BatchServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.handle(self, "GET")

            def do_POST(self) -> None:
                server.handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        body = h.rfile.read(int(h.headers.get("content-length") or 0))
        route = f"{method} " + re.sub(r"/(file|batch)_\w+", r"/{id}", h.path.split("?")[0])
        with self.lock:
            self.counts[route] += 1
            if self.flaky[route] > 0:
                self.flaky[route] -= 1
                return self.send(h, 500, {"error": {"message": "flaky"}})
            status, payload = self.route(route, h, body)
        self.send(h, status, payload)

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, payload) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes) else "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def route(self, route: str, h: BaseHTTPRequestHandler, body: bytes):
        ident = re.search(r"/((?:file|batch)_\w+)", h.path)
        if route == "POST /v1/files":
            content = re.search(rb'filename="[^"]*"\r\n(?:[^\r\n]+\r\n)*\r\n(.*?)\r\n--', body, re.DOTALL).group(1)
            return 200, self._file(content)
        if route == "GET /v1/files/{id}/content":
            return 200, self.files[ident.group(1)]
        if route == "POST /v1/batches":
            args = json.loads(body)
            batch_id = f"batch_{len(self.batches) + 1}"
            self.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": args["endpoint"], "status": "in_progress",
                                      "input_file_id": args["input_file_id"], "completion_window": "24h", "created_at": 0,
                                      "output_file_id": None, "error_file_id": None, "polls": 0}
            return 200, self._public(batch_id)
        if route == "GET /v1/batches/{id}":
            batch = self.batches[ident.group(1)]
            batch["polls"] += 1
            if batch["status"] == "in_progress" and batch["polls"] >= self.polls:
                self._finish(batch)
            return 200, self._public(batch["id"])
        return 404, {"error": {"message": f"no route {route}"}}

    def _file(self, content: bytes) -> dict:
        file_id = f"file_{len(self.files) + 1}"
        self.files[file_id] = content
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": 0, "filename": "x.jsonl",
                "purpose": "batch", "status": "processed"}

    def _public(self, batch_id: str) -> dict:
        return {k: v for k, v in self.batches[batch_id].items() if k != "polls"}

    def _finish(self, batch: dict) -> None:
        out, err, expired = [], [], False
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            request = json.loads(line)
            cid, body = request["custom_id"], request["body"]
            self.seen[cid] += 1
            text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
            if "[expire]" in text and self.seen[cid] == 1:
                expired = True
                continue
            if "[fail400]" in text:
                err.append({"id": "r", "custom_id": cid, "response": {"status_code": 400, "body": {
                    "error": {"message": "invalid request", "type": "invalid_request_error"}}}, "error": None})
                continue
            if "[fail500]" in text and self.seen[cid] == 1:
                out.append({"id": "r", "custom_id": cid, "response": {"status_code": 500, "body": {
                    "error": {"message": "server error"}}}, "error": None})
                continue
            content = self.responder(body)
            usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(content.split())}
            choice = ({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                      if "messages" in body else {"index": 0, "text": content, "finish_reason": "stop"})
            out.append({"id": "r", "custom_id": cid, "error": None, "response": {"status_code": 200, "body": {
                "id": "c", "object": "chat.completion", "model": body["model"], "choices": [choice], "usage": usage}}})
        batch["status"] = "expired" if expired else "completed"
        if out:
            batch["output_file_id"] = self._file("\n".join(map(json.dumps, out)).encode() + b"\n")["id"]
        if err:
            batch["error_file_id"] = self._file("\n".join(map(json.dumps, err)).encode() + b"\n")["id"]
