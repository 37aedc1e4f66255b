"""A fake of Morph's REST API for tests: a real HTTP server on 127.0.0.1, in a thread.

It serves the resources it is given per connection (connector, owner) and model, a page at a time
with an opaque cursor, as ``GET /v1/resources/{model}?limit=N&cursor=C`` does; it checks the
``x-api-key``/``x-api-secret`` headers (401 with Morph's error shape when wrong), and can be told to
misbehave: answer an error status (429 with ``Retry-After``, 500...) a number of times, be slow,
answer a body of its own (not JSON, not a list), send its answer a byte at a time, or drop the
connection halfway through it::

    with FakeMorphAPI() as api:
        api.add("hubspot", "tenant_1", "crmOpportunity", [opportunity_event()["data"]])
        api.fail(429, retry_after="1")
        settings.MORPH_WEBHOOKS = {..., "API_URL": api.url, "API_KEY": api.key, "API_SECRET": api.secret}
        call_command("morph_webhooks_sync", "--connector", "hubspot", "--owner", "tenant_1")
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PATH_PREFIX = "/v1/resources/"
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Raw:
    """A body sent as it is, ``trickle`` seconds between two of its bytes, the connection closed
    after ``cut`` of them (its whole length declared)."""

    data: bytes
    trickle: float = 0.0
    cut: int | None = None


@dataclass
class Fault:
    """The next ``times`` requests that match (``model``, and ``page``: the 0-based index of the
    page asked for) wait ``delay`` seconds, then answer ``status`` (None: the page, as usual), with
    ``body`` instead of the JSON it would send (a 200 when ``status`` is None), ``trickle`` seconds
    between two bytes of it, the connection closed after ``cut`` bytes of it."""

    status: int | None
    times: int
    model: str | None = None
    page: int | None = None
    delay: float = 0.0
    retry_after: str | None = None
    body: bytes | None = None
    trickle: float = 0.0
    cut: int | None = None

    def matches(self, model: str, page: int) -> bool:
        return self.times > 0 and self.model in (None, model) and self.page in (None, page)

    def raw(self, answer: Any) -> Raw:
        data = json.dumps(answer).encode() if self.body is None else self.body
        return Raw(data, self.trickle, self.cut)


@dataclass(frozen=True)
class Request:
    """A request the fake answered (credentials left out), and the status it got."""

    model: str
    connector_id: str
    owner_id: str
    limit: int
    cursor: str | None
    status: int


class FakeMorphAPI:
    def __init__(self, key: str = "fake-api-key", secret: str = "fake-api-secret-0123456789") -> None:
        self.key = key
        self.secret = secret
        self.resources: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.faults: list[Fault] = []
        self.unlisted: set[str] = set()
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # Serving

    def start(self, port: int = 0) -> FakeMorphAPI:
        """Serve on 127.0.0.1 only, on ``port`` (0: any free one; see :attr:`url`)."""
        handler = type("Handler", (_Handler,), {"api": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-morph-api", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> FakeMorphAPI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None, "start() the fake first"
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    # What it serves

    def add(self, connector_id: str, owner_id: str, model: str, resources: Iterable[dict[str, Any]]) -> None:
        """Serve ``resources`` (each shaped like a webhook's ``data``) too, after those already given;
        one with the id of a given one replaces it in place."""
        with self.lock:
            served = self.resources.setdefault((connector_id, owner_id, model), [])
            index = {resource["id"]: position for position, resource in enumerate(served)}
            for resource in resources:
                if resource["id"] in index:
                    served[index[resource["id"]]] = resource
                else:
                    index[resource["id"]] = len(served)
                    served.append(resource)

    def remove(self, connector_id: str, owner_id: str, model: str, remote_id: str) -> None:
        with self.lock:
            served = self.resources.get((connector_id, owner_id, model), [])
            served[:] = [resource for resource in served if resource["id"] != remote_id]

    def refuse_list(self, model: str) -> None:
        """Answer every list of ``model`` as Morph does for a connector that cannot list it (HubSpot
        and engagements): 404, ``CONNECTOR::RESOURCE_MODEL::NOT_FOUND``."""
        with self.lock:
            self.unlisted.add(model)

    def fail(
        self,
        status: int | None = 500,
        *,
        times: int = 1,
        model: str | None = None,
        page: int | None = None,
        delay: float = 0.0,
        retry_after: str | None = None,
        body: bytes | None = None,
        trickle: float = 0.0,
        cut: int | None = None,
    ) -> None:
        """Misbehave on the next ``times`` matching requests (see :class:`Fault`)."""
        with self.lock:
            self.faults.append(Fault(status, times, model, page, delay, retry_after, body, trickle, cut))

    # Answering

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(path)
        if not url.path.startswith(PATH_PREFIX) or "/" in url.path[len(PATH_PREFIX) :]:
            return _error(404, "MORPH::NOT_FOUND", f"No route {url.path}.")
        model = unquote(url.path[len(PATH_PREFIX) :])
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        connector_id, owner_id = headers.get("x-connector-id", ""), headers.get("x-owner-id", "")
        try:
            limit = int(query.get("limit", "100"))
            offset = _offset(query["cursor"]) if "cursor" in query else 0
        except ValueError:
            return self.logged(
                model,
                connector_id,
                owner_id,
                0,
                query,
                _error(400, "MORPH::BAD_REQUEST", "Invalid limit or cursor."),
            )
        if not 1 <= limit <= MAX_LIMIT:
            return self.logged(
                model,
                connector_id,
                owner_id,
                limit,
                query,
                _error(400, "MORPH::BAD_REQUEST", f"limit must be 1 to {MAX_LIMIT}."),
            )
        fault = self.take_fault(model, offset // limit)
        if fault is not None:
            time.sleep(fault.delay)
            if fault.status is not None or fault.body is not None:
                status = 200 if fault.status is None else fault.status
                answer = _error(status, _code(status), "Injected fault.")
                if fault.retry_after is not None:
                    answer[2]["Retry-After"] = fault.retry_after
                if fault.body is not None or fault.trickle or fault.cut is not None:
                    answer = (status, fault.raw(answer[1]), answer[2])
                return self.logged(model, connector_id, owner_id, limit, query, answer)
        if headers.get("x-api-key") != self.key or headers.get("x-api-secret") != self.secret:
            answer = _error(401, "MORPH::UNAUTHORIZED", "Invalid API key or secret.")
        elif not connector_id or not owner_id:
            answer = _error(400, "MORPH::BAD_REQUEST", "x-connector-id and x-owner-id are required.")
        elif model in self.unlisted:
            answer = _error(
                404,
                "CONNECTOR::RESOURCE_MODEL::NOT_FOUND",
                f'Entity "{model}" not implemented on the "{connector_id}" connector.',
            )
        else:
            with self.lock:
                # The page alone: copying every resource served would make a scan quadratic.
                served = self.resources.get((connector_id, owner_id, model), [])
                page, total = served[offset : offset + limit], len(served)
            next_cursor = _cursor(offset + limit) if offset + limit < total else None
            body: Any = {"object": "list", "data": page, "next": next_cursor}
            if fault is not None and (fault.trickle or fault.cut is not None):
                body = fault.raw(body)
            answer = (200, body, {})
        return self.logged(model, connector_id, owner_id, limit, query, answer)

    def take_fault(self, model: str, page: int) -> Fault | None:
        with self.lock:
            fault = next((fault for fault in self.faults if fault.matches(model, page)), None)
            if fault is not None:
                fault.times -= 1
            return fault

    def logged(
        self,
        model: str,
        connector_id: str,
        owner_id: str,
        limit: int,
        query: dict[str, str],
        answer: tuple[int, Any, dict[str, str]],
    ) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.requests.append(
                Request(model, connector_id, owner_id, limit, query.get("cursor"), answer[0])
            )
        return answer


def _cursor(offset: int) -> str:
    # Opaque, as Morph's are: clients must pass it back, not compute it.
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(cursor: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(cursor) from exc
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(cursor)
    return offset


def _code(status: int) -> str:
    return {
        429: "MORPH::RATE_LIMIT_EXCEEDED",
        401: "MORPH::UNAUTHORIZED",
        403: "MORPH::FORBIDDEN",
    }.get(status, "MORPH::INTERNAL_ERROR" if status >= 500 else "MORPH::BAD_REQUEST")


def _error(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"error": {"code": code, "message": message}}, {}


class _Handler(BaseHTTPRequestHandler):
    api: FakeMorphAPI
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, body, extra_headers = self.api.answer(self.path, headers)
        raw = body if isinstance(body, Raw) else Raw(json.dumps(body).encode())
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw.data)))
            for name, value in extra_headers.items():
                self.send_header(name, value)
            self.end_headers()
            sent = raw.data if raw.cut is None else raw.data[: raw.cut]
            if raw.trickle:
                for index in range(len(sent)):
                    time.sleep(raw.trickle)
                    self.wfile.write(sent[index : index + 1])
            else:
                self.wfile.write(sent)
            if raw.cut is not None:
                self.close_connection = True  # mid-answer: the client is left short of its length
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a slow page): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read FakeMorphAPI.requests instead
