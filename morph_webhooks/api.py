"""A client for Morph's REST API: the pages of one connection's resources of one model.

Morph answers ``GET /v1/resources/{model}?limit=N&cursor=C`` with ``{"object": "list", "data":
[...], "next": cursor or null}``, and errors with ``{"error": {"code", "message"}}``. A throttled
CRM (429), a failing server (5xx), a timeout and a connection dropped mid-answer are retried with
backoff; wrong credentials or operations (401/403) are not: retrying cannot fix them. The API
secret is sent in a header and appears in no message, exception or log line.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .body import ascii_number
from .conf import conf
from .extras import MissingDependency
from .parsing import unique_keys
from .text import is_storable

try:
    import httpx
except ImportError as exc:  # an optional dependency: only the sync reads Morph's API
    raise MissingDependency("Reading Morph's API", "httpx", "sync") from exc

# Seconds before the first retry, doubled for each further one.
BACKOFF = 1.0
# The longest wait between two attempts, whatever Retry-After asks: a sync is better told the API
# is unavailable than left hanging for an hour.
MAX_WAIT = 60.0
# What is worth another attempt: a throttled CRM and a failing server.
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# A connection closed or reset in the middle of an exchange (a server restarting, a proxy giving
# up): worth another attempt, as a timeout is. A connection refused is not.
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# Empty pages in a row, each with a next cursor, after which a scan is taken to lead nowhere (new
# cursors for ever, each page renewing the sync's lease): a scan ends on a page whose next is null,
# and a few empty pages before it (resources deleted during the scan) are no reason to stop.
MAX_EMPTY_PAGES = 20
# Morph's error codes for a model whose list its connector does not implement (HubSpot retrieves
# engagements, stages and workspaces one at a time): the other models can still be listed.
LIST_NOT_IMPLEMENTED = frozenset({"CONNECTOR::RESOURCE_MODEL::NOT_FOUND", "CONNECTOR::OPERATION::NOT_FOUND"})
# What is kept of Morph's error code and message, in messages and in what a sync records.
CODE_CHARS = 100
MESSAGE_CHARS = 500


@dataclass(frozen=True)
class Page:
    """One answer of the list endpoint: its resources, and the cursor of the next page (None on
    the last)."""

    resources: list[Any]
    next_cursor: str | None


class MorphAPIError(Exception):
    """Morph's API could not be read for a connection; the message names the connection, the
    status and Morph's error code and message, never a credential. ``status`` is Morph's answer's
    (None when there was none)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CursorLoop(MorphAPIError):
    """The scan's cursors lead nowhere: one given twice, or MAX_EMPTY_PAGES empty pages in a row."""


class AccessDenied(MorphAPIError):
    """401/403: the connection's credentials or enabled operations are wrong."""


class ListRefused(MorphAPIError):
    """Morph will not list this model for the connection: its connector cannot. The connection's
    other models are not concerned."""


class MorphAPI:
    """Reads one connection's (``connector_id``, ``owner_id``) resources; a context manager that
    closes its HTTP connections."""

    def __init__(
        self,
        connector_id: str,
        owner_id: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connector_id = connector_id
        self.owner_id = owner_id
        self.page_size = conf.API_PAGE_SIZE
        self.retries = conf.API_RETRIES
        self.sleep = sleep
        self.client = httpx.Client(
            base_url=conf.API_URL.rstrip("/"),
            # Every phase bounded: connecting, each read, each write and waiting for a pooled
            # connection; the whole answer too (_get).
            timeout=httpx.Timeout(conf.API_TIMEOUT),
            headers={
                "accept": "application/json",
                "x-api-key": conf.API_KEY,
                "x-api-secret": conf.API_SECRET,
                "x-connector-id": connector_id,
                "x-owner-id": owner_id,
            },
            follow_redirects=False,
        )

    def __enter__(self) -> MorphAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    @property
    def connection(self) -> str:
        return f"connector {self.connector_id!r}, owner {self.owner_id!r}"

    def pages(self, model: str, cursor: str | None = None) -> Iterator[Page]:
        """The pages of ``model`` from ``cursor`` (the first page when None). The next page is
        asked for while the caller applies the current one (Morph's answer takes about as long),
        never more than one ahead; its failure is raised when the caller gets to it. Cursors that
        lead nowhere raise CursorLoop in place of the page whose ``next`` shows it, so that the
        caller never keeps that cursor."""
        asked = set() if cursor is None else {cursor}
        empty_pages = 0
        page = _Ahead(self.page, model, cursor).result()
        while True:
            empty_pages = 0 if page.resources else empty_pages + 1
            if page.next_cursor in asked:
                raise CursorLoop(
                    f"Morph's API gave a cursor twice in one scan of {model} for {self.connection}: "
                    "its pages go round in circles, so the scan stopped."
                )
            if page.next_cursor is not None and empty_pages >= MAX_EMPTY_PAGES:
                raise CursorLoop(
                    f"Morph's API answered {empty_pages} empty pages in a row, each with a next "
                    f"cursor, in one scan of {model} for {self.connection}: the scan stopped, as it "
                    "might never end."
                )
            if page.next_cursor is not None:
                asked.add(page.next_cursor)
            ahead = None if page.next_cursor is None else _Ahead(self.page, model, page.next_cursor)
            yield page
            if ahead is None:
                return
            page = ahead.result()

    def page(self, model: str, cursor: str | None = None) -> Page:
        params: dict[str, str | int] = {"limit": self.page_size}
        if cursor is not None:
            params["cursor"] = cursor
        path = f"/v1/resources/{quote(model, safe='')}"
        attempt = 0
        while True:
            try:
                response, body = self._get(path, params)
            except (httpx.TimeoutException, *DROPPED) as exc:
                if attempt >= self.retries:
                    what = (
                        "did not answer in time"
                        if isinstance(exc, httpx.TimeoutException)
                        else "dropped the connection before its answer was complete"
                    )
                    raise MorphAPIError(
                        f"Morph's API {what} for {self.connection} ({model}) "
                        f"after {attempt + 1} attempts: {type(exc).__name__}: {exc}."
                    ) from None
                self._wait(attempt, None)
            except httpx.HTTPError as exc:
                # Connection refused, DNS, TLS: not a slow server, nothing a retry in seconds fixes.
                raise MorphAPIError(
                    f"Could not reach Morph's API at {conf.API_URL} for {self.connection} ({model}): "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            else:
                if response.status_code == 200:
                    return self._read_page(body, model)
                if response.status_code not in RETRIED_STATUSES or attempt >= self.retries:
                    raise self._error(response, body, model, attempt + 1)
                self._wait(attempt, response.headers.get("retry-after"))
            attempt += 1

    def _get(self, path: str, params: dict[str, str | int]) -> tuple[httpx.Response, bytes]:
        """The answer to a GET of ``path``, and its body, in within API_TIMEOUT: each read's own
        timeout would let a server sending a byte at a time hold the sync for ever."""
        deadline = time.monotonic() + conf.API_TIMEOUT
        with self.client.stream("GET", path, params=params) as response:
            chunks = []
            for chunk in response.iter_bytes():
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(
                        f"the answer took longer than API_TIMEOUT ({conf.API_TIMEOUT:g} s)"
                    )
                chunks.append(chunk)
            return response, b"".join(chunks)

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        # Seconds in digits, as HTTP has them; a date, "nan", "inf", "-1" or junk: the backoff.
        seconds = None if retry_after is None else ascii_number(retry_after.strip())
        delay = BACKOFF * 2**attempt if seconds is None else seconds
        self.sleep(min(delay, MAX_WAIT))

    def _read_page(self, body: bytes, model: str) -> Page:
        try:
            answer = parse_answer(body)
        except ValueError as exc:
            raise MorphAPIError(
                f"Morph's API answered {model} for {self.connection} with something other than "
                f"JSON: {clipped(str(exc), MESSAGE_CHARS)}",
                200,
            ) from None
        if isinstance(answer, dict) and "error" in answer:
            code, message = morph_error(answer)
            raise MorphAPIError(
                f"Morph's API answered 200 for {self.connection} ({model}) with an error: {code}: {message}",
                200,
            )
        # Anything else would be taken for the end of the scan, and --delete-missing would delete
        # what the pages not read hold; an empty cursor would ask for the first page again, and
        # one the database cannot store (a NUL) would fail the page's transaction that saves it.
        if not (
            isinstance(answer, dict)
            and answer.get("object") == "list"
            and isinstance(answer.get("data"), list)
            and "next" in answer
            and (
                answer["next"] is None
                or (isinstance(answer["next"], str) and answer["next"] and is_storable(answer["next"]))
            )
        ):
            raise MorphAPIError(
                f"Morph's API answered {model} for {self.connection} with something other than a "
                'list ({"object": "list", "data": [...], "next": a cursor or null}).',
                200,
            )
        return Page(resources=answer["data"], next_cursor=answer["next"])

    def _error(self, response: httpx.Response, body: bytes, model: str, attempts: int) -> MorphAPIError:
        try:
            answer = parse_answer(body)
        except ValueError:
            answer = None
        code, message = morph_error(answer, response.reason_phrase)
        status = response.status_code
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        text = f"Morph's API answered {status}{tries} for {self.connection} ({model}): {code}: {message}"
        if 400 <= status < 500 and code in LIST_NOT_IMPLEMENTED:
            return ListRefused(
                f"Morph cannot list {model} for {self.connection}: its connector reads them one at a "
                f"time, so a sync cannot copy them; their webhooks still do. ({text})",
                status,
            )
        if status in (401, 403):
            return AccessDenied(
                f"{text}. Check MORPH_WEBHOOKS['API_KEY'] and ['API_SECRET'], and that the connection "
                f"has the {model}::list operation enabled.",
                status,
            )
        return MorphAPIError(text, status)


class _Ahead:
    """One page asked for in a thread of its own. A daemon: should the sync stop (Ctrl-C, a
    failure), a request still under way holds nothing up; closing the client ends it."""

    def __init__(self, read: Callable[[str, str | None], Page], model: str, cursor: str | None) -> None:
        self.done = threading.Event()
        self.page: Page | None = None
        self.error: BaseException | None = None
        threading.Thread(target=self.run, args=(read, model, cursor), daemon=True).start()

    def run(self, read: Callable[[str, str | None], Page], model: str, cursor: str | None) -> None:
        try:
            self.page = read(model, cursor)
        except BaseException as exc:  # raised in the caller's thread by result()
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> Page:
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.page is not None
        return self.page


def parse_answer(body: bytes) -> Any:
    """An answer's JSON, read as strictly as a webhook's on what could change its meaning (two
    equal keys); raises ValueError saying why it is not JSON."""
    try:
        return json.loads(body, object_pairs_hook=unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def morph_error(answer: Any, reason: str = "") -> tuple[str, str]:
    """Morph's error code and message, cut short (an answer is not bounded), or what can be said
    of an answer without them."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        return (
            clipped(str(error.get("code", "unknown")), CODE_CHARS),
            clipped(str(error.get("message", "")), MESSAGE_CHARS),
        )
    return "unknown", (reason or "no error in the answer")


def clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
