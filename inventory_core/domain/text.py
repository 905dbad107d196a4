"""Character rules for text that enters the ledger, and how text is shown back.

Every interface (OPC UA, CLI, PLC pipeline, the HTTP API) reaches the ledger
through `Ledger`, which applies these rules to each text field of a request
before the request reaches the writer, so the rules, and the messages, are the
same on SQLite and PostgreSQL and no database ever sees a value it would refuse.

- **Identifiers** (material, lot, storage unit, user, movement id): 1 to N
  printable characters (`str.isprintable`: letters, marks, digits,
  punctuation, symbols, single emoji), no whitespace, no control characters,
  no format characters (bidirectional controls U+202A-202E, U+2066-2069,
  U+200E/U+200F, zero-width characters, soft hyphen, BOM, emoji joined by
  ZWJ), no surrogates, private-use or unassigned code points, in Unicode NFC
  (so two ids that look the same are the same id).
- **Keys** (idempotency keys, document references): the identifier rules,
  except that inner spaces are allowed; no leading or trailing whitespace.
- **Free text** (reason, comment, description): anything but control
  characters; tab and newline are allowed. Refused: C0/C1 controls including
  NUL and carriage return, DEL, the line/paragraph separators U+2028/U+2029,
  the bidirectional embedding/override/isolate controls U+202A-202E and
  U+2066-2069 (they reorder what follows them on a line: "Trojan Source"),
  and lone surrogates.

On output, `shown(text)` escapes what a terminal or a log line would act on
(newlines, tabs, other controls, bidi controls) and caps the length;
machine-readable output (`--json`, the audit trail) keeps the exact text.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from inventory_core.domain.errors import ValidationError

__all__ = [
    "FREE_TEXT_MAX",
    "ID_MAX",
    "KEY_MAX",
    "SHOWN_MAX",
    "InvalidText",
    "check_free_text",
    "check_identifier",
    "check_key",
    "escape_controls",
    "shown",
]

ID_MAX: Final = 128  # lots, users (VARCHAR(128)); materials and units are VARCHAR(64)
KEY_MAX: Final = 200  # idempotency keys (VARCHAR(200))
FREE_TEXT_MAX: Final = 2000  # reasons and comments (TEXT, but a reason is not an essay)
SHOWN_MAX: Final = 200  # characters of a value quoted in a message or a log line

# Refused in free text: C0 controls but tab and newline, DEL, C1 controls, the line and
# paragraph separators, bidi embeddings/overrides/isolates, surrogates.
_FREE_TEXT_REFUSED: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
# Escaped on output: every control character (tab and newline too), the separators,
# bidi controls (U+200E/F as well), invisible characters (zero-width space, word joiner,
# invisible operators, BOM), surrogates. Not ZWNJ/ZWJ: scripts and emoji need them.
_ESCAPED: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069"
    "\ufeff\ud800-\udfff]"
)
_NAMED_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class InvalidText(ValidationError):
    """A text field holds characters its rule refuses, or is too long; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_identifier(field: str, value: str, *, max_length: int = ID_MAX) -> None:
    """Raise InvalidText unless `value` is a valid identifier (see the module docstring)."""
    _check_length(field, value, max_length)
    if value.isascii():  # the common case: printable ASCII without a space
        if value.isprintable() and " " not in value:
            return
    elif value.isprintable() and " " not in value:
        _check_nfc(field, value)
        return
    position, char = next((i, c) for i, c in enumerate(value, 1) if c == " " or not c.isprintable())
    raise InvalidText(
        field,
        f"{field} {_quoted(value)} has {_describe(char)} at character {position}: "
        "identifiers take printable characters without spaces "
        "(no control, format or bidirectional characters)",
    )


def check_key(field: str, value: str, *, max_length: int = KEY_MAX) -> None:
    """Raise InvalidText unless `value` is a valid key: an identifier that may hold
    inner spaces, without leading or trailing whitespace."""
    _check_length(field, value, max_length)
    if value.isprintable() and value == value.strip():
        if not value.isascii():
            _check_nfc(field, value)
        return
    for position, char in enumerate(value, 1):
        if not char.isprintable():
            raise InvalidText(
                field,
                f"{field} {_quoted(value)} has {_describe(char)} at character {position}: "
                "keys take printable characters (no control, format or bidirectional "
                "characters)",
            )
    raise InvalidText(field, f"{field} {_quoted(value)} starts or ends with whitespace")


def check_free_text(field: str, value: str, *, max_length: int = FREE_TEXT_MAX) -> None:
    """Raise InvalidText if `value` holds a refused character or is too long."""
    if len(value) > max_length:
        raise InvalidText(
            field, f"{field} is {len(value)} characters long; at most {max_length} are allowed"
        )
    found = _FREE_TEXT_REFUSED.search(value)
    if found is not None:
        raise InvalidText(
            field,
            f"{field} has {_describe(found.group())} at character {found.start() + 1}: "
            "free text takes no control characters except tab and newline "
            "(and no bidirectional embedding, override or isolate controls)",
        )


def escape_controls(text: str) -> str:
    """`text` with what a terminal would act on made visible: `\\n`, `\\r`, `\\t`,
    `\\x00`, `\\u202e`, ... (so one value stays on one line and in its own order)."""
    if _ESCAPED.search(text) is None:
        return text
    return _ESCAPED.sub(_escape, text)


def shown(text: str, limit: int = SHOWN_MAX) -> str:
    """`text` for a message, a log line or a table cell: controls escaped, and cut
    to `limit` characters with `... (N chars)` when longer. Not for the record:
    the ledger and the audit keep the exact text."""
    if len(text) > limit:
        return f"{escape_controls(text[:limit])}... ({len(text)} chars)"
    return escape_controls(text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _quoted(value: str) -> str:
    return f"'{shown(value, 64)}'"


def _check_length(field: str, value: str, max_length: int) -> None:
    if not value:
        raise InvalidText(field, f"{field} is missing")
    if len(value) > max_length:
        raise InvalidText(
            field,
            f"{field} {_quoted(value)} is {len(value)} characters long; "
            f"at most {max_length} are allowed",
        )


def _check_nfc(field: str, value: str) -> None:
    if not unicodedata.is_normalized("NFC", value):
        raise InvalidText(
            field,
            f"{field} {_quoted(value)} is not in Unicode NFC form "
            "(send its canonical composed spelling, e.g. 'Ä' as one character)",
        )


_CATEGORIES: Final = {
    "Cc": "a control character",
    "Cf": "a format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zs": "a space",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
_BIDI: Final = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _describe(char: str) -> str:
    """`U+202E (RIGHT-TO-LEFT OVERRIDE, a bidirectional control)`."""
    code = f"U+{ord(char):04X}"
    name = unicodedata.name(char, "")
    if char in _BIDI:
        kind = "a bidirectional control"
    elif char == " ":
        kind = "a space"
    else:
        kind = _CATEGORIES.get(unicodedata.category(char), "a character")
    return f"{code} ({name + ', ' if name else ''}{kind})"
