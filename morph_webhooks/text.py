"""Text that every database can store: no NUL character and valid UTF-8 (no lone surrogate).

PostgreSQL refuses both in its text and JSON columns; a JSON body can carry either as an escape
(``\\u0000``, ``\\ud800``). Everything stored from a request is tested here.
"""

from __future__ import annotations


def encodable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8, i.e. holds no lone surrogate. ASCII text, nearly all of
    it, is told apart in C first."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")  # fails on a surrogate, and only on one
    except UnicodeEncodeError:
        return False
    return True


def is_storable(text: str) -> bool:
    """Whether every database can store ``text`` as it is."""
    return "\x00" not in text and encodable(text)


def storable(text: str) -> str:
    """``text`` in a form every database can store: each NUL and lone surrogate replaced."""
    if is_storable(text):
        return text  # as almost every header and body is
    return text.replace("\x00", "\ufffd").encode("utf-8", errors="replace").decode("utf-8")


def printable(body: bytes) -> str:
    """A body as storable text: bytes that are not UTF-8 are replaced."""
    return storable(body.decode("utf-8", errors="replace"))
