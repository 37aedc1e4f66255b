from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, QueryDict
from rest_framework import exceptions, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .auth import FromAllowedNetwork, MorphAuthentication, client_address
from .body import read_body
from .conf import InvalidSetting, conf
from .errors import error_body, http_status_for
from .health import Status, run_checks
from .intake import Rejection, receive
from .metrics import count_delivery, exposition, unavailable_reason
from .models import ID_LENGTH, WebhookDelivery
from .parsing import connector_header
from .redaction import (
    SECRET_HEADERS,
    TOKEN_PARAMETER,
    ExceptionReporter,
    SafeExceptionReporterFilter,
    forget_token,
    redacter,
)
from .text import printable, storable

logger = logging.getLogger(__name__)

_HEADERS = "_morph_webhooks_headers"


class AlwaysJSON(BaseContentNegotiation):
    """Morph's Accept header is no reason to refuse an event: answer JSON whatever it asks for."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return None

    def select_renderer(
        self, request: Request, renderers: Any, format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return (renderers[0], renderers[0].media_type)


class MorphView(APIView):
    """What the endpoint's views share: Morph's credentials (the token is in the URL, so error
    reports must not show it), JSON answers to everything, no session, outside ATOMIC_REQUESTS."""

    authentication_classes = [MorphAuthentication]
    permission_classes = [FromAllowedNetwork]
    throttle_classes: list[Any] = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = AlwaysJSON

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        # The endpoint commits the request log even when processing rolls back, and one health
        # check's database error must not abort the others': neither may run inside
        # ATOMIC_REQUESTS' transaction. Morph and monitors have no session for
        # LoginRequiredMiddleware; the token is their credential.
        return login_not_required(transaction.non_atomic_requests(super().as_view(**initkwargs)))

    def get_exception_handler(self) -> Any:
        return handle_exception

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        # Django's error reports (ADMINS' e-mails, the DEBUG page) take these from the request, so
        # the views' own failures mask the secret whatever the project's settings.
        request.exception_reporter_filter = SafeExceptionReporterFilter()
        request.exception_reporter_class = ExceptionReporter
        return super().initialize_request(request, *args, **kwargs)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        forget_token(request._request)


class ReceiveView(MorphView):
    """Morph's webhook endpoint: authenticate, hand the request to the intake, answer, log it and
    count it."""

    http_method_names = ["post"]
    parser_classes: list[Any] = []  # the raw body is read here (recorded_body), parsed by the intake
    # The request's log entry, once authenticated: the request log line names its model, and its
    # event once the policy let it in (accepted_event) labels the metrics with its model and connector.
    delivery: WebhookDelivery | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.started = time.monotonic()
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        log_request(
            request._request,
            response,
            time.monotonic() - getattr(self, "started", time.monotonic()),
            self.delivery,
        )
        count_delivery(
            response.status_code,
            response.data,
            self.delivery.accepted_event if self.delivery is not None else None,
        )
        return response

    def post(self, request: Request) -> Response:
        delivery = self.delivery = new_delivery(request._request)
        received = receive(
            delivery, request_headers(request._request), partial(recorded_body, request._request, delivery)
        )
        if isinstance(received, Rejection):
            return Response(received.detail, status=received.status)
        return Response({"status": received.outcome})


class HealthView(MorphView):
    """The health check for load balancers and uptime monitors: 503 when something is critical."""

    http_method_names = ["get"]

    def get(self, request: Request) -> Response:
        report = run_checks()
        code = status.HTTP_503_SERVICE_UNAVAILABLE if report.status == Status.CRITICAL else status.HTTP_200_OK
        return Response(report.as_json(), status=code, headers={"Cache-Control": "no-store"})


class MetricsView(HealthView):
    """Prometheus' scrape (``morph_webhooks.metrics``), authenticated and served as the health check."""

    def get(self, request: Request) -> Response | HttpResponse:  # type: ignore[override]
        reason = unavailable_reason()
        if reason:
            return Response(
                {"error": "metrics_unavailable", "detail": reason}, status=status.HTTP_404_NOT_FOUND
            )
        content, content_type = exposition()
        return HttpResponse(content, content_type=content_type, headers={"Cache-Control": "no-store"})


def request_headers(request: HttpRequest) -> dict[str, str]:
    """The request's headers by lower-case name, credentials left out; worked out once per request
    (the delivery, the event and the log line all read them). Not to be changed."""
    headers: dict[str, str] | None = getattr(request, _HEADERS, None)
    if headers is None:
        headers = {
            lower: value
            for name, value in request.headers.items()
            if (lower := name.lower()) not in SECRET_HEADERS
        }
        setattr(request, _HEADERS, headers)
    return headers


def new_delivery(request: HttpRequest) -> WebhookDelivery:
    # A proxy may pass the original URL, secret included, in any header of its choosing.
    redact = redacter()
    headers = {storable(name): storable(redact(value)) for name, value in request_headers(request).items()}
    query = QueryDict(mutable=True)
    query.update(request.GET)
    query.pop(TOKEN_PARAMETER, None)
    return WebhookDelivery.received(
        remote_addr=client_address(request),
        path=request.path + (f"?{query.urlencode()}" if query else ""),
        headers=headers,
        connector_id=connector_header(headers) or "",
    )


def recorded_body(request: HttpRequest, delivery: WebhookDelivery) -> bytes:
    """The request's body, kept on its delivery as it arrived; refused (an APIException) when it
    is too large, chunked where it cannot be read, or not JSON."""
    body = read_body(request)
    delivery.record_body(body, printable(body))
    check_content_type(request)
    return body


def check_content_type(request: HttpRequest) -> None:
    content_type = request.content_type or ""
    # Morph sends application/json; a missing type is tolerated, anything else is a mistake.
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise exceptions.UnsupportedMediaType(
            content_type, f'Expected "application/json", got "{content_type}".'
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Decompressing would let a small request expand past MAX_BODY_SIZE; Morph never compresses.
        raise exceptions.UnsupportedMediaType(
            content_type, f'Content-Encoding "{encoding}" is not accepted; send the body uncompressed.'
        )


def error_response(exc: exceptions.APIException) -> Response:
    response = Response(error_body(exc), status=http_status_for(exc))
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        response["WWW-Authenticate"] = MorphAuthentication().authenticate_header(None)  # type: ignore[arg-type]
    return response


def log_request(
    request: HttpRequest, response: Response, seconds: float, delivery: WebhookDelivery | None = None
) -> None:
    """One line per request, without secrets; header values are quoted with %r so that a
    hostile value cannot forge log lines. The same values are the record's attributes (``extra``),
    for JSON formatters; none is the name of a LogRecord attribute."""
    level = logging.INFO if response.status_code < 400 else logging.WARNING
    if not logger.isEnabledFor(level):
        return  # a project that keeps only warnings pays nothing for the others
    data = response.data if isinstance(response.data, dict) else {}
    headers = request_headers(request)
    fields = {
        "outcome": str(data.get("status") or data.get("error", "")),
        # The Morph model named by the body, when there was one to read (not on a 401).
        "model": delivery.event.partition("::")[0] if delivery is not None else "",
        "connector": (connector_header(headers) or "")[:ID_LENGTH],
        "owner": headers.get("x-owner-id", "")[:ID_LENGTH],
        "key": headers.get("x-idempotency-key", "")[:ID_LENGTH],
        "status": response.status_code,
        "ms": round(seconds * 1000, 1),
    }
    logger.log(
        level,
        "Morph webhook %s %s key=%r connector=%r owner=%r %.1fms",
        response.status_code,
        fields["outcome"],
        fields["key"],
        fields["connector"],
        fields["owner"],
        seconds * 1000,
        extra=fields,
    )


def handle_exception(exc: Exception, context: dict[str, Any]) -> Response:
    """Every failure answers JSON: 4xx for the sender's mistakes, 5xx when Morph should retry."""
    if isinstance(exc, exceptions.APIException):
        return error_response(exc)
    if isinstance(exc, InvalidSetting):
        report_invalid_setting(exc)
        return Response({"error": "improperly_configured", "detail": str(exc)}, status=500)
    code = http_status_for(exc)
    logger.exception("Morph webhook failed (%s)", code, exc_info=exc)
    if code == status.HTTP_503_SERVICE_UNAVAILABLE:
        return Response(
            {"error": "unavailable", "detail": "Temporarily unavailable; retry later."},
            status=code,
            headers={"Retry-After": "30"},
        )
    return Response(
        {"error": "processing_failed", "detail": f"{type(exc).__name__} while processing the event."},
        status=code,
    )


def report_invalid_setting(exc: InvalidSetting) -> None:
    """Log what is wrong with the settings once, not with every request that finds it wrong."""
    reported = conf.derived(_reported_setting_problems)
    if str(exc) not in reported:
        reported.add(str(exc))
        logger.error(
            "The Morph webhook endpoint answers 500 until its settings are fixed "
            "(manage.py check reports it): %s",
            exc,
        )


def _reported_setting_problems() -> set[str]:
    # One set per MORPH_WEBHOOKS: a problem made again after a change of the settings is logged again.
    return set()
