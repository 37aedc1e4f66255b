"""The endpoint's address as Morph must be given it: the site's URL, the path where the project
includes ``morph_webhooks.urls``, and the secret as ``?token=`` (Morph only lets users set a URL).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import quote, urlencode, urlsplit

from django.urls import NoReverseMatch, get_script_prefix, reverse

from .conf import conf
from .redaction import TOKEN_PARAMETER


class EndpointError(ValueError):
    """The endpoint's URL cannot be made from this site URL or these settings."""


def endpoint_url(site_url: str) -> str:
    """``site_url`` (scheme, host and any prefix the project is served under, FORCE_SCRIPT_NAME
    included) plus the path of the receiving view within the project."""
    try:
        parts = urlsplit(site_url.strip())
    except ValueError:  # an unbalanced [ or ] around an IPv6 address
        raise EndpointError(
            f"{site_url!r} is not a site URL: give one such as https://crm.example.com."
        ) from None
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise EndpointError(f"{site_url!r} has an invalid port.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"{site_url!r} is not a site URL: give one such as https://crm.example.com.")
    if parts.username is not None or parts.password is not None:
        # Credentials here would be printed and sent along; the token is what authenticates.
        raise EndpointError("Give the site URL without a user name or password.")
    if parts.query or parts.fragment:
        raise EndpointError(f"{site_url!r} has a query or fragment: give the site's URL only.")
    try:
        path = reverse("morph_webhooks:receive")
    except NoReverseMatch:
        raise EndpointError(
            "The project's URLconf does not include morph_webhooks.urls: add "
            '*webhook_urls("webhooks/morph/") (from morph_webhooks.urls) to its urlpatterns.'
        ) from None
    # reverse() starts with the script prefix (FORCE_SCRIPT_NAME); the site URL already has it.
    within_project = path.removeprefix(get_script_prefix().rstrip("/"))
    prefix = quote(parts.path.rstrip("/"), safe="/%")
    return f"{parts.scheme}://{parts.netloc}{prefix}{within_project}"


def webhook_url(site_url: str) -> str:
    """The URL to paste in Morph: the endpoint with the first of ``SECRETS`` as its token (the
    first is the current one while secrets rotate). Without secrets it only works when the
    endpoint accepts unauthenticated requests."""
    url = endpoint_url(site_url)
    secret = next((secret for secret in conf.SECRETS if secret), None)
    if secret is not None:
        return f"{url}?{urlencode({TOKEN_PARAMETER: secret})}"
    if conf.SIGNING_SECRETS:
        raise EndpointError(
            "MORPH_WEBHOOKS['SECRETS'] is empty. Morph cannot sign requests (SIGNING_SECRETS are for a "
            "gateway in front of it): add a secret to SECRETS for Morph's URL."
        )
    if conf.ALLOW_UNAUTHENTICATED:
        return url
    raise EndpointError("MORPH_WEBHOOKS['SECRETS'] is empty: add a secret, the URL's token.")


def is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
