"""What every database can store, decided in one place for the request log, the parser and the
delivery's naming of a refused body."""

from __future__ import annotations

import json

import pytest

from morph_webhooks.events import InvalidEvent
from morph_webhooks.models import WebhookDelivery
from morph_webhooks.parsing import load_json
from morph_webhooks.text import is_storable, printable, storable

TEXTS = {
    "ascii": ("crmOpportunity::created", True),
    "accented": ("Opportunité ünïcode 😀", True),
    "nul": ("before\x00after", False),
    "lone_surrogate": ("before\ud800after", False),
    "both": ("é\x00\udfff", False),
}


@pytest.mark.parametrize(("text", "expected"), TEXTS.values(), ids=TEXTS.keys())
def test_one_answer_for_the_log_the_parser_and_the_delivery(text, expected):
    assert is_storable(text) is expected
    # The request log keeps storable text as it is, and replaces the rest.
    assert (storable(text) == text) is expected
    assert is_storable(storable(text))
    # The parser refuses a body holding it (as an escape: raw, neither can be sent as JSON).
    body = json.dumps({"key": text}).encode()
    if expected:
        assert load_json(body) == {"key": text}
    else:
        with pytest.raises(InvalidEvent):
            load_json(body)
    # A refused body's event type is kept only when it can be stored.
    delivery = WebhookDelivery(body=json.dumps({"event": text, "data": {"id": "1"}}))
    delivery.name_from_body()
    assert delivery.event == (text if expected else "")
    assert delivery.remote_id == "1"


def test_printable_replaces_what_is_not_utf8_and_nul():
    assert printable("été".encode()) == "été"
    assert printable(b"a\xffb\x00c") == "a\ufffdb\ufffdc"
    assert printable(b'{"k": "\\u0000"}') == '{"k": "\\u0000"}'  # an escape is text, kept
