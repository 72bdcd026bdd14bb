"""The toy teacher behind an OpenAI-compatible HTTP endpoint: `nla toy teacher --port 8000`.

It reads only the text prefix (as a real teacher LLM does): the topic from the topic nouns it sees, the people and
cities it mentions, and the prefix's last words, then answers in the release's form (nla/toy/corpus.py). Serves
POST /v1/chat/completions and GET /v1/models on loopback, so `nla teach` can be tried without a GPU or a key.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nla.toy.corpus import CITIES, PEOPLE, TOPICS, Doc, teacher_explanation

MODEL = "nla-toy-teacher"
_TEXT = re.compile(r"<text>(.*?)</text>", re.DOTALL)


def explain_prefix(prefix: str) -> str:
    words = prefix.split()
    votes = Counter(t for t, (nouns, _) in TOPICS.items() for w in words if w in nouns)
    topic = votes.most_common(1)[0][0] if votes else "something unclear"
    doc = Doc(doc_id="", text=prefix, topic=topic, people=tuple(w for w in words if w in PEOPLE),
              cities=tuple(w for w in words if w in CITIES))
    return teacher_explanation(doc, prefix)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            content = req["messages"][-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return self._send(400, {"error": {"message": "expected {messages: [{role, content}, ...]}"}})
        m = _TEXT.search(content)
        answer = explain_prefix(m.group(1) if m else content)
        self._send(200, {"id": "toy", "object": "chat.completion", "model": req.get("model", MODEL),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": answer}}]})


def serve(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start the server on a background thread; `.server_address` has the bound port; `.shutdown()` stops it."""
    server = ThreadingHTTPServer((host, port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
