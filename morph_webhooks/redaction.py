"""Keeping the shared secret out of what the app stores and what a project logs or mails.

Morph can only be given a URL, so the secret travels in its query string (``?token=...``), and
everything that writes a URL down would keep it: the request log's proxy headers (X-Original-URL,
Referer...), Django's error reports, runserver's request lines, a traceback quoting the URL.

Logging is configured before the app registry is ready, so this module imports no models.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from functools import partial
from pprint import pformat
from typing import Any
from urllib.parse import quote, quote_plus

from django.conf import settings
from django.http import HttpRequest, QueryDict
from django.utils.safestring import SafeString, mark_safe
from django.views import debug

from .conf import InvalidSetting, conf

TOKEN_PARAMETER = "token"
REDACTED = "[redacted]"
# Never written to the request log or shown: credentials, and a signature that could be replayed.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "webhook-signature"})

# A token= value wherever a URL or query string shows up, up to what ends it in a query, in
# HTML (&amp;) or in a repr (quotes). Over-masking another "token=" is harmless.
TOKEN_IN_TEXT = re.compile(rf"\b({TOKEN_PARAMETER}=)[^&#\s\"'<>]+", re.IGNORECASE)


def configured_secrets() -> list[str]:
    """Every credential the settings hold: the shared secrets, the signing secrets and Morph's API
    secret. Any of them may end up in a text (a URL, an exception's message): all are masked."""
    if not settings.configured:
        return []
    candidates = [*conf.SECRETS, *conf.SIGNING_SECRETS, conf.API_SECRET]
    return [secret for secret in candidates if isinstance(secret, str) and secret]


def spellings(secrets: Iterable[str]) -> tuple[str, ...]:
    """Each secret as it is written in a URL: itself, percent-encoded, form-encoded."""
    return tuple(
        dict.fromkeys(
            spelling
            for secret in secrets
            for spelling in (secret, quote(secret, safe=""), quote_plus(secret))
        )
    )


def _configured_spellings() -> tuple[str, ...]:
    return spellings(configured_secrets())


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every ``token=`` value masked, and the secrets (the configured ones, see
    :func:`configured_secrets`, unless given) in every spelling a URL gives them: a percent-encoded parameter name
    (``%74oken=``) or a URL nested in another one still carries the secret itself."""
    return _redact(text, spellings(secrets) if secrets is not None else _configured_masked())


def redacter() -> Callable[[str], str]:
    """:func:`redact` with the configured secrets, looked up once: for the many texts of one
    request (its headers) or of one log record (its fields)."""
    masked = _configured_masked()
    return lambda text: _redact(text, masked)


def _configured_masked() -> tuple[str, ...]:
    if not settings.configured:
        return ()
    # Every request redacts each of its headers: the spellings are worked out once per settings.
    return conf.derived(_configured_spellings)


def _redact(text: str, masked: tuple[str, ...]) -> str:
    if "=" in text:  # what every match of TOKEN_IN_TEXT holds; most header values have none
        text = TOKEN_IN_TEXT.sub(_masked, text)
    for spelling in masked:
        if spelling in text:
            text = text.replace(spelling, REDACTED)
    return text


def _masked(match: re.Match[str]) -> str:
    return match[1] + REDACTED


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers as the request log keeps and shows them: no credentials, the secret masked in
    every value (a proxy may forward the original URL in any header of its choosing)."""
    redact_one = redacter()
    return {name: redact_one(value) for name, value in headers.items() if name.lower() not in SECRET_HEADERS}


def forget_token(request: HttpRequest) -> None:
    """Mask the secret in the request's query once it has been checked: Django's error e-mails
    show the URL and GET parameters through no filter (only through DEFAULT_EXCEPTION_REPORTER),
    and error trackers read them too. Nothing needs the secret after authentication."""
    if TOKEN_PARAMETER not in request.GET:
        return
    # Not request.GET.copy(): a deep copy, of values nothing changes.
    query = QueryDict(mutable=True, encoding=request.GET.encoding)
    for name, values in request.GET.lists():
        query.setlist(name, [REDACTED] if name == TOKEN_PARAMETER else list(values))
    request.GET = query  # type: ignore[assignment]  # the stubs type it read-only, Django lets it be set
    request.META["QUERY_STRING"] = redact(request.META.get("QUERY_STRING", ""))


# What every LogRecord has; anything else on a record came from a call's ``extra``.
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RedactToken(logging.Filter):
    """Masks the secret in a record's message (its arguments included: runserver's request
    line, a request's repr), its traceback (APPEND_SLASH's error quotes the URL), its stack and
    the text of its ``extra`` fields, which JSON formatters write as they are.
    Attach it to handlers: a logger's filters do not see records propagated from its children.
    The app puts it on Django's request loggers itself (:func:`mask_request_loggers`)."""

    formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call is for the handler to report, not for this to raise
            return True
        try:
            redact = redacter()
        except InvalidSetting:
            # Settings it cannot read (manage.py check names them): the token= values are still
            # masked, and Django's request loggers, which log every 404 of the project, go on.
            redact = partial(_redact, masked=())
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the masked text is what they write.
            record.exc_text = self.formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name in vars(record).keys() - RECORD_ATTRIBUTES:  # the extra fields, found in C
            value = getattr(record, name)
            if isinstance(value, str):
                setattr(record, name, redact(value))
        return True


# Django's own request loggers: runserver's request lines (the URL, token included) and the
# warnings and errors of requests. Each writes its records itself, with no child logger
# propagating to it, so a filter on the logger masks every record it writes, whichever handlers a
# project's LOGGING gives it.
REQUEST_LOGGERS = ("django.server", "django.request")


def mask_request_loggers() -> None:
    """Mask the secret in what Django's request loggers write; run once logging is configured."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactToken) for existing in logger.filters):
            logger.addFilter(RedactToken())


class Shown:
    """A value as an error report shows it, already masked."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    """Django's filter, plus the secret masked in every META value (the query string, RAW_URI,
    a proxy's original URL, Referer) and in the frames' local variables (a request's repr)."""

    def get_safe_request_meta(self, request: HttpRequest) -> dict[str, Any]:
        meta = super().get_safe_request_meta(request)
        return {name: redact(value) if isinstance(value, str) else value for name, value in meta.items()}

    def cleanse_special_types(self, request: HttpRequest | None, value: Any) -> Any:
        value = super().cleanse_special_types(request, value)
        try:
            shown = pformat(value)
        except Exception:  # the report says what went wrong formatting it
            return value
        return Shown(redact(shown))


class ExceptionReporter(debug.ExceptionReporter):
    """Django's report with the secret masked where no filter reaches: the request's URL and
    GET parameters, the exception's message, and then the whole text as a last pass."""

    def get_traceback_data(self) -> dict[str, Any]:
        data = super().get_traceback_data()
        if "request_GET_items" in data:
            data["request_GET_items"] = [
                (name, REDACTED if name == TOKEN_PARAMETER else redact(value))
                for name, value in data["request_GET_items"]
            ]
        return data

    # Masking only replaces text with REDACTED, so what was safe HTML stays safe.
    def get_traceback_html(self) -> SafeString:
        return mark_safe(redact(super().get_traceback_html()))

    def get_traceback_text(self) -> SafeString:
        return mark_safe(redact(super().get_traceback_text()))
