from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from morph_webhooks.conf import Setting, Settings, conf

SECRET = "a-long-random-secret-0123456789"


def test_a_value_is_checked_once_per_change_of_the_settings(settings):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "MAX_ATTEMPTS": 3}
    with mock.patch.object(Setting, "is_valid", autospec=True, side_effect=Setting.is_valid) as checked:
        assert [conf.MAX_ATTEMPTS for _ in range(5)] == [3] * 5
        assert checked.call_count == 1

        settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "MAX_ATTEMPTS": 4}
        assert [conf.MAX_ATTEMPTS for _ in range(5)] == [4] * 5
        assert checked.call_count == 2


def test_override_settings_of_the_same_dict_changed_in_place_is_read_again(settings):
    configured = {"SECRETS": [SECRET], "MAX_ATTEMPTS": 3}
    settings.MORPH_WEBHOOKS = configured
    assert conf.MAX_ATTEMPTS == 3
    configured["MAX_ATTEMPTS"] = 7
    # Same object: only Django's setting_changed signal tells that it changed.
    with override_settings(MORPH_WEBHOOKS=configured):
        assert conf.MAX_ATTEMPTS == 7


def test_settings_assigned_without_override_settings_are_read_again(settings):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "MAX_ATTEMPTS": 3}
    assert conf.MAX_ATTEMPTS == 3
    # No signal is sent for a plain assignment; the new dict is still seen.
    django_settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "MAX_ATTEMPTS": 9}
    assert conf.MAX_ATTEMPTS == 9


def test_removed_settings_fall_back_to_the_defaults(settings):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "MAX_ATTEMPTS": 3}
    assert conf.MAX_ATTEMPTS == 3
    del settings.MORPH_WEBHOOKS
    assert (conf.MAX_ATTEMPTS, conf.SECRETS) == (5, [])


def test_an_invalid_value_is_refused_on_every_read(settings):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "MAX_ATTEMPTS": 0}
    for _ in range(2):
        with pytest.raises(ImproperlyConfigured, match=r"MORPH_WEBHOOKS\['MAX_ATTEMPTS'\] must be"):
            _ = conf.MAX_ATTEMPTS
    assert conf.SECRETS == [SECRET]


def test_derived_values_are_computed_once_per_change_of_the_settings(settings):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET, "another-long-secret-0123456789"]}
    computed = []

    def lengths() -> list[int]:
        computed.append(1)
        return [len(secret) for secret in conf.SECRETS]

    assert [conf.derived(lengths) for _ in range(3)] == [[31, 30]] * 3
    assert len(computed) == 1
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET]}
    assert conf.derived(lengths) == [31]
    assert len(computed) == 2


def test_a_value_is_kept_with_the_settings_it_was_read_from(settings):
    first = {"SECRETS": [SECRET], "MAX_ATTEMPTS": 3}
    second = {"SECRETS": [SECRET], "MAX_ATTEMPTS": 4}
    settings.MORPH_WEBHOOKS = first
    checked = Settings.checked

    def changed_meanwhile(self: Settings) -> tuple[object, dict[Any, Any]]:
        # Another thread changes the settings between the lookup and the read.
        result = checked(self)
        django_settings.MORPH_WEBHOOKS = second
        return result

    with mock.patch.object(Settings, "checked", changed_meanwhile):
        assert conf.MAX_ATTEMPTS == 3
    assert conf.MAX_ATTEMPTS == 4
    django_settings.MORPH_WEBHOOKS = first
    assert conf.MAX_ATTEMPTS == 3
