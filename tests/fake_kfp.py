"""A fake Kubeflow Pipelines REST API (v2beta1): answers what ``kfp.Client`` calls, and records it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeKfp:
    """Answers the few KFP v2beta1 REST calls kfp.Client makes, and records them."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, body: dict, status: int = 200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake.requests.append(("GET", self.path, None))
                if self.path.startswith("/apis/v2beta1/healthz"):
                    return self._reply({"multi_user": False})
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self._reply({})  # no experiment with that name yet
                self._reply({"error": "not found"}, 404)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(("POST", self.path, body))
                if self.path == "/apis/v2beta1/experiments":
                    return self._reply({"experiment_id": "exp-1", **body})
                if self.path == "/apis/v2beta1/runs":
                    return self._reply({"run_id": "run-42", **body})
                if self.path == "/apis/v2beta1/recurringruns":
                    return self._reply({"recurring_run_id": "rr-7", **body})
                self._reply({"error": "not found"}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def posted(self, path: str) -> list[dict]:
        return [body for method, p, body in self.requests if method == "POST" and p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
