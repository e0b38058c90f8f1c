"""A local OpenAI-compatible server for the service tests: chat completions and images, with faults.

    with FakeOpenAIServer(api_key="sk-test", latency_s=0.0) as srv:   # latency_s: per chat answer
        srv.url          # "http://127.0.0.1:PORT/v1"
        srv.hits         # requests seen per fault marker
        srv.requests     # every JSON body received (chat) in arrival order

Behaviour is scripted by markers in the request text (the instruction), so concurrent requests
get deterministic answers whatever their order:

- ``#malformed-once`` / ``#malformed-always``: prose with digits instead of JSON (the repair
  request, recognised by its wording, gets a valid answer only in the ``once`` case);
- ``#range-once`` / ``#range-always``: ``instruction_score`` 7;
- ``#429-N`` / ``#500-N`` / ``#timeout-N``: the first N requests fail that way (``timeout``
  sleeps past the client's timeout), later ones succeed; N = ``always`` never succeeds;
- ``#low``: instruction scored 2 (a failing assessment); ``#knowledge``: diagnosis "knowledge";
- ``#echo-key``: a 400 whose message repeats the request's Authorization header.

Answers report token usage (``prompt_tokens`` = characters / 100, ``completion_tokens`` = 7).
The images endpoints answer a PNG: generations a solid colour from the prompt's hash, edits the
first input image inverted.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

DIMS = ("instruction", "consistency", "quality", "knowledge")
MARKER = re.compile(r"#(malformed|range|429|500|timeout)-(once|always|\d+)|#(low|knowledge)")


def png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _text_of(messages: list[dict[str, Any]]) -> str:
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out += [p.get("text", "") for p in c if p.get("type") == "text"]
    return "\n".join(out)


def _answer(prompt: str, low: bool, knowledge: bool, out_of_range: bool) -> dict[str, Any]:
    if "Score the output image" in prompt:
        a: dict[str, Any] = {}
        for d in DIMS:
            a[f"{d}_score"] = 5
            a[f"{d}_reasoning"] = f"{d} looks right"
        if low:
            a["instruction_score"], a["instruction_reasoning"] = 2, "the blue square is missing"
        if out_of_range:
            a["instruction_score"] = 7
        return a
    if "failure_analysis" in prompt:
        return {"failure_analysis": "the blue square is missing", "improvement_plan": "add a small blue square"}
    if '"diagnosis"' in prompt:
        return {"diagnosis": "knowledge" if knowledge else "complex", "reason": "many parts"}
    if '"steps"' in prompt:
        return {"steps": ["draw a red circle", "add a small blue square"]}
    if '"done"' in prompt:
        return {"done": True, "reason": "the step is there"}
    return {"score": 4, "reason": "mostly right"}


class FakeOpenAIServer:
    """A threaded HTTP server on 127.0.0.1 with the chat and images protocols (see module doc)."""

    def __init__(self, api_key: str | None = None, timeout_sleep_s: float = 1.0, latency_s: float = 0.0) -> None:
        self.api_key, self.timeout_sleep_s, self.latency_s = api_key, timeout_sleep_s, latency_s
        self.hits: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.auth_failures = 0
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(n)
                if server.api_key is not None and self.headers.get("authorization") != f"Bearer {server.api_key}":
                    with server._lock:
                        server.auth_failures += 1
                    return self._send(401, {"error": {"message": "bad key"}})
                if "#echo-key" in raw.decode(errors="replace"):  # a careless proxy echoing the request headers
                    return self._send(400, {"error": {"message": f"rejected {self.headers.get('authorization')}"}})
                if self.path == "/v1/chat/completions":
                    return server._chat(self, json.loads(raw))
                if self.path == "/v1/images/generations":
                    return server._generate(self, json.loads(raw))
                if self.path == "/v1/images/edits":
                    return server._edit(self, raw)
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _send(self, status: int, body: Any, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------ faults
    def _fault(self, h: Any, text: str, key: str) -> bool:
        """Apply a transport fault named in ``text``; True when the request was answered with it."""
        for m in MARKER.finditer(text):
            kind, times = m.group(1), m.group(2)
            if kind not in ("429", "500", "timeout"):
                continue
            with self._lock:
                marker = m.group(0)
                self.hits[marker] = self.hits.get(marker, 0) + 1
                seen = self._seen[(marker, key)] = self._seen.get((marker, key), 0) + 1
            if times == "always" or seen <= (1 if times == "once" else int(times)):
                if kind == "timeout":
                    time.sleep(self.timeout_sleep_s)
                    h._send(200, {"error": "too late"})
                elif kind == "429":
                    h._send(429, {"error": {"message": "slow down"}})
                else:
                    h._send(500, {"error": {"message": "boom"}})
                return True
        return False

    def _chat(self, h: Any, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)
        text = _text_of(body["messages"])
        key = hashlib.sha256(text.encode()).hexdigest()
        if self._fault(h, text, key):
            return
        if self.latency_s:
            time.sleep(self.latency_s)
        repair = "could not be used" in text
        markers = {m.group(0) for m in MARKER.finditer(text)}
        with self._lock:
            for m in markers:
                if not m.startswith(("#429", "#500", "#timeout")):  # those are counted by _fault
                    self.hits[m] = self.hits.get(m, 0) + 1
        if "#malformed-always" in markers or ("#malformed-once" in markers and not repair):
            content = "I would give it 5 for instruction and 4 for quality, overall 5."
        else:
            out_of_range = "#range-always" in markers or ("#range-once" in markers and not repair)
            content = json.dumps(_answer(text, "#low" in markers, "#knowledge" in markers, out_of_range))
        usage = {"prompt_tokens": len(json.dumps(body)) // 100, "completion_tokens": 7}
        usage["total_tokens"] = usage["prompt_tokens"] + 7
        h._send(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body.get("model"),
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                   "finish_reason": "stop"}], "usage": usage})

    def _generate(self, h: Any, body: dict[str, Any]) -> None:
        prompt = body.get("prompt", "")
        if self._fault(h, prompt, hashlib.sha256(prompt.encode()).hexdigest()):
            return
        c = hashlib.sha256(prompt.encode()).digest()[:3]
        arr = np.zeros((32, 32, 3), np.uint8) + np.frombuffer(c, np.uint8)
        h._send(200, {"created": 0, "data": [{"b64_json": png_b64(arr)}]})

    def _edit(self, h: Any, raw: bytes) -> None:
        msg = BytesParser(policy=email_policy).parsebytes(
            b"content-type: " + h.headers["content-type"].encode() + b"\r\n\r\n" + raw)
        fields, images = {}, []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                images.append((name, np.asarray(Image.open(io.BytesIO(part.get_content())).convert("RGB"))))
            else:
                fields[name] = part.get_content()
        prompt = fields.get("prompt", "")
        if self._fault(h, prompt, hashlib.sha256(prompt.encode()).hexdigest()):
            return
        if not images:
            return h._send(400, {"error": {"message": "no image"}})
        with self._lock:
            self.requests.append({"edit": fields, "image_fields": [n for n, _ in images]})
        h._send(200, {"created": 0, "data": [{"b64_json": png_b64(255 - images[0][1])}]})
