"""A client for Morph's REST API: the pages of one connection's resources of one model.

Morph answers ``GET /v1/resources/{model}?limit=N&cursor=C`` with ``{"object": "list", "data":
[...], "next": cursor or null}``, and errors with ``{"error": {"code", "message"}}``. A throttled
CRM (429), a failing server (5xx) and a timeout are retried with backoff; wrong credentials or
operations (401/403) are not: retrying cannot fix them. The API secret is sent in a header and
appears in no message, exception or log line.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .conf import conf
from .extras import MissingDependency

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


class AccessDenied(MorphAPIError):
    """401/403: the connection's credentials or enabled operations are wrong."""


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
            # Every phase bounded: connecting, each read, each write and waiting for a pooled connection.
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
        never more than one ahead; its failure is raised when the caller gets to it."""
        page = _Ahead(self.page, model, cursor).result()
        while True:
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
                response = self.client.get(path, params=params)
            except httpx.TimeoutException as exc:
                if attempt >= self.retries:
                    raise MorphAPIError(
                        f"Morph's API did not answer in time for {self.connection} ({model}) "
                        f"after {attempt + 1} attempts: {type(exc).__name__}."
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
                    return self._read_page(response, model)
                if response.status_code not in RETRIED_STATUSES or attempt >= self.retries:
                    raise self._error(response, model, attempt + 1)
                self._wait(attempt, response.headers.get("retry-after"))
            attempt += 1

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = BACKOFF * 2**attempt
        if retry_after is not None:
            # An HTTP date, or junk: the backoff stands.
            with contextlib.suppress(ValueError):
                delay = max(float(retry_after), 0.0)
        self.sleep(min(delay, MAX_WAIT))

    def _read_page(self, response: httpx.Response, model: str) -> Page:
        try:
            body = response.json()
        except ValueError:
            body = None
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("data"), list)
            or not isinstance(body.get("next"), (str, type(None)))
        ):
            raise MorphAPIError(
                f"Morph's API answered {model} for {self.connection} with something other than a "
                'list ({"data": [...], "next": ...}).',
                response.status_code,
            )
        # An empty cursor would ask for the first page again, forever.
        return Page(resources=body["data"], next_cursor=body["next"] or None)

    def _error(self, response: httpx.Response, model: str, attempts: int) -> MorphAPIError:
        code, message = morph_error(response)
        status = response.status_code
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        text = f"Morph's API answered {status}{tries} for {self.connection} ({model}): {code}: {message}"
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


def morph_error(response: httpx.Response) -> tuple[str, str]:
    """Morph's error code and message, or what can be said of an answer without them."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        return str(error.get("code", "unknown")), str(error.get("message", ""))[:500]
    return "unknown", (response.reason_phrase or "no error in the answer")
