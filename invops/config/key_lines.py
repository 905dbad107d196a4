"""Line numbers of keys in TOML text, so that a problem can say where it is.

tomllib gives no positions, and a message that points at the line is worth a
small best-effort scanner of its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from invops.config.errors import Loc

__all__ = ["KeyLines"]

_BARE_OR_QUOTED: Final = r"""(?:[A-Za-z0-9_-]+|"[^"\\]*"|'[^']*')"""
_KEY_LINE: Final = re.compile(rf"\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_HEADER_LINE: Final = re.compile(
    rf"\s*(\[\[?)\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*\]\]?\s*(?:#.*)?"
)
_KEY_PART: Final = re.compile(_BARE_OR_QUOTED)


class KeyLines:
    """Line numbers of keys and table headers in TOML text, by key path.

    Best effort, for messages only: the text already parsed, so a line scan that
    follows `[table]` / `[[array]]` headers (counting array occurrences) and skips
    multi-line strings finds the right line for ordinary files. Anything it cannot
    place falls back to the enclosing table, or to no line at all.
    """

    def __init__(self, text: str | None) -> None:
        self._lines: dict[Loc, int] = {}
        self._array_index: dict[Loc, int] = {}
        if text:
            self._scan(text)

    def find(self, loc: Loc) -> int | None:
        for end in range(len(loc), 0, -1):
            line = self._lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def _scan(self, text: str) -> None:
        table: Loc = ()
        open_string: str | None = None  # delimiter of the multi-line string we are in
        for number, line in enumerate(text.splitlines(), start=1):
            if open_string is not None:
                if line.count(open_string) % 2 == 1:
                    open_string = None
                continue
            if header := _HEADER_LINE.fullmatch(line):
                table = self._enter_table(header[1] == "[[", _key_parts(header[2]), number)
                continue
            if key := _KEY_LINE.match(line):
                parts = _key_parts(key[1])
                for end in range(1, len(parts) + 1):
                    self._lines.setdefault((*table, *parts[:end]), number)
                rest = line[key.end() :]
                for delimiter in ('"""', "'''"):
                    if rest.count(delimiter) % 2 == 1:
                        open_string = delimiter
                        break

    def _enter_table(self, is_array: bool, parts: list[str], number: int) -> Loc:
        if is_array:
            array = (*self._resolve(parts[:-1]), parts[-1])
            index = self._array_index.get(array, -1) + 1
            self._array_index[array] = index
            self._lines.setdefault(array, number)
            table: Loc = (*array, index)
        else:
            table = self._resolve(parts)
        self._lines.setdefault(table, number)
        return table

    def _resolve(self, parts: Sequence[str]) -> Loc:
        """Dotted header -> path, stepping into the latest element of any array of tables."""
        loc: Loc = ()
        for part in parts:
            loc = (*loc, part)
            if loc in self._array_index:
                loc = (*loc, self._array_index[loc])
        return loc


def _key_parts(dotted: str) -> list[str]:
    return [part.strip("\"'") for part in _KEY_PART.findall(dotted)]
