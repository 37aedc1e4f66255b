from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from morph_webhooks.checks import check_settings


def ids(settings_value, settings, debug=False):
    settings.MORPH_WEBHOOKS = settings_value
    settings.DEBUG = debug
    return [message.id for message in check_settings()]


def test_configured_secret_passes(settings):
    assert ids({"SECRETS": ["a-long-random-secret-0123456789"]}, settings) == []


@pytest.mark.parametrize("value", [{}, {"SECRETS": []}, {"SECRETS": [""]}, {"SECRETS": ""}])
def test_no_secret_is_an_error(settings, value):
    assert ids(value, settings) == ["morph_webhooks.E001"]


def test_missing_setting_is_an_error(settings):
    del settings.MORPH_WEBHOOKS
    assert [message.id for message in check_settings()] == ["morph_webhooks.E001"]


def test_explicit_opt_out_for_development(settings):
    assert ids({"ALLOW_UNAUTHENTICATED": True}, settings, debug=True) == []


def test_opt_out_left_on_in_production_warns(settings):
    assert ids({"ALLOW_UNAUTHENTICATED": True}, settings, debug=False) == ["morph_webhooks.W001"]


@pytest.mark.parametrize(
    "value", [{"SECRETS": 12345}, {"SECRETS": [None]}, {"SECRETS": [b"bytes-secret-0123456789abcdef"]}]
)
def test_secrets_of_the_wrong_type(settings, value):
    assert ids(value, settings) == ["morph_webhooks.E002"]


def test_weak_secret_warns(settings):
    assert ids({"SECRETS": ["short", "a-long-random-secret-0123456789"]}, settings) == ["morph_webhooks.W002"]


def test_check_is_registered_with_the_framework(settings):
    settings.MORPH_WEBHOOKS = {}
    with pytest.raises(SystemCheckError, match="morph_webhooks.E001"):
        call_command("check", tags=["security"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"PROCESSING": "deferred"}, []),
        ({"PROCESSING": "later"}, ["morph_webhooks.E005"]),
        ({"KEY_RETENTION_DAYS": 3}, ["morph_webhooks.W003"]),
    ],
)
def test_processing_settings(settings, value, expected):
    settings.MORPH_WEBHOOKS = {"SECRETS": ["a-long-random-secret-0123456789"], **value}
    assert [message.id for message in check_settings()] == expected


def test_deferred_without_a_tasks_framework(settings, monkeypatch):
    monkeypatch.setattr("morph_webhooks.checks.find_spec", lambda name: None)
    settings.MORPH_WEBHOOKS = {"SECRETS": ["a-long-random-secret-0123456789"], "PROCESSING": "deferred"}
    assert [message.id for message in check_settings()] == ["morph_webhooks.E006"]
