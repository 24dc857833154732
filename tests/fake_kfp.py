"""A fake Kubeflow Pipelines REST API (v2beta1): answers what ``kfp.Client`` calls, and records it.

Every request is checked against the API as ``kfp_server_api`` (the generated client kfp 2.5
installs) describes it: the route and method must be one of its operations, the query parameters
ones that operation takes, and the JSON body must match the operation's body model field by field
(unknown fields, wrong types and enum values outside the model's are errors). A mismatch is
answered with HTTP 400 and recorded in ``errors``; the ``fake_kfp`` fixture fails the test when
any was recorded, so a request that drifts from the real API fails a test instead of passing.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# int64 fields: the swagger spec types them as strings (protobuf's JSON form), and the server's
# JSON decoder accepts a number as well; kfp.Client sends numbers for these.
INT64_FIELDS = frozenset({"max_concurrency", "interval_second", "page_size", "total_size"})
CLIENT_ONLY_PARAMS = frozenset(
    {"async_req", "_return_http_data_only", "_preload_content", "_request_timeout"}
)


@functools.lru_cache(maxsize=1)
def api_operations() -> list[dict]:
    """Every operation of kfp_server_api: method, path pattern, query params, body model."""
    import kfp_server_api

    operations = []
    for _, api_class in inspect.getmembers(kfp_server_api.api, inspect.isclass):
        for name, method in inspect.getmembers(api_class, inspect.isfunction):
            if not name.endswith("_with_http_info"):
                continue
            source = inspect.getsource(method)
            route = re.search(r"call_api\(\s*'([^']+)', '([A-Z]+)'", source)
            params = re.search(r"all_params = \[([^\]]*)\]", source)
            body = re.search(r":type body: (\w+)", source)
            path_params = set(re.findall(r"\{(\w+)\}", route.group(1)))
            pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(route.group(1)))
            operations.append(
                {
                    "name": f"{api_class.__name__}.{name.removesuffix('_with_http_info')}",
                    "method": route.group(2),
                    "path": re.compile(f"^{pattern}$"),
                    "query": set(re.findall(r"'(\w+)'", params.group(1))) - path_params - {"body"},
                    "body": body.group(1) if body else None,
                }
            )
    return operations


def check_request(method: str, url: str, body) -> list[str]:
    """The ways a request differs from the API kfp_server_api describes (empty: none)."""
    parsed = urllib.parse.urlsplit(url)
    matches = [
        op for op in api_operations() if op["method"] == method and op["path"].match(parsed.path)
    ]
    if not matches:
        return [f"{method} {parsed.path}: no such operation in kfp_server_api"]
    # A literal path beats a templated one (GET /runs/{id} vs a literal sibling route).
    op = min(matches, key=lambda o: o["path"].pattern.count("[^/]+"))
    errors = [
        f"{op['name']}: unknown query parameter {key!r}"
        for key in urllib.parse.parse_qs(parsed.query)
        if key not in op["query"]
    ]
    if op["body"]:
        errors += check_value(body, op["body"], f"{op['name']} body")
    elif body is not None:
        errors.append(f"{op['name']}: takes no body")
    return errors


def check_value(value, type_name: str, where: str, field: str = "") -> list[str]:
    """``value`` (decoded JSON) against an openapi type of kfp_server_api; the errors found."""
    import kfp_server_api

    if value is None:
        return []
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        inner = type_name[5:-1]
        return [e for i, v in enumerate(value) for e in check_value(v, inner, f"{where}[{i}]")]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        inner = type_name[5:-1].split(", ", 1)[1]
        return [e for k, v in value.items() for e in check_value(v, inner, f"{where}.{k}")]
    scalar = _check_scalar(value, type_name, field)
    if scalar is not None:
        return [] if scalar else [f"{where}: {value!r} is not a {type_name}"]
    model = getattr(kfp_server_api.models, type_name)
    if getattr(model, "allowable_values", None):  # an enum
        if value in model.allowable_values:
            return []
        return [f"{where}: {value!r} is not one of {model.allowable_values}"]
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} object, got {value!r}"]
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
    errors = []
    for key, item in value.items():
        if key not in by_json:
            errors.append(f"{where}: {type_name} has no field {key!r}")
            continue
        attr = by_json[key]
        errors += check_value(item, model.openapi_types[attr], f"{where}.{key}", attr)
    return errors


def _check_scalar(value, type_name: str, field: str) -> bool | None:
    """True/False for a scalar type; None when ``type_name`` is a model."""
    if type_name == "object":
        return True
    if type_name == "str":
        if field in INT64_FIELDS:
            return _is_int(value) or (isinstance(value, str) and value.lstrip("-").isdigit())
        return isinstance(value, str)
    if type_name == "int":
        return _is_int(value)
    if type_name == "float":
        return _is_int(value) or isinstance(value, float)
    if type_name == "bool":
        return isinstance(value, bool)
    if type_name in ("datetime", "date"):
        try:
            datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class FakeKfp:
    """Answers the few KFP v2beta1 REST calls kfp.Client makes, checks and records them."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict | None]] = []
        self.errors: list[str] = []
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

            def _checked(self, method: str, body) -> bool:
                fake.requests.append((method, self.path, body))
                errors = check_request(method, self.path, body)
                if errors:
                    fake.errors += errors
                    self._reply({"error": "; ".join(errors), "code": 3}, 400)
                return not errors

            def do_GET(self):
                if not self._checked("GET", None):
                    return
                if self.path.startswith("/apis/v2beta1/healthz"):
                    return self._reply({"multi_user": False})
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self._reply({})  # no experiment with that name yet
                self._reply({"error": "not found"}, 404)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self._checked("POST", body):
                    return
                path = urllib.parse.urlsplit(self.path).path
                if path == "/apis/v2beta1/experiments":
                    return self._reply({"experiment_id": "exp-1", **body})
                if path == "/apis/v2beta1/runs":
                    return self._reply({"run_id": "run-42", **body})
                if path == "/apis/v2beta1/recurringruns":
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
