"""Config problems and their wording: what a reader of a broken file sees.

Kept apart from the schema and the loader so that every message is built in one
place: `file:line: key.path: message`, pydantic errors said in TOML words, and a
did-you-mean for misspelt keys and references.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel
from pydantic_core import ErrorDetails

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "Issue",
    "Loc",
    "did_you_mean",
    "format_path",
    "pydantic_message",
]

# A key path as pydantic reports it: ('storage_units', 2, 'area').
Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file, printable as `file:line: path: message`."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        # File-level problems (unreadable file, TOML syntax) have no key path.
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Raised when a config file cannot be read or is invalid; carries every problem."""

    problems: list[ConfigProblem]

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem before it is placed in the file: pydantic-style location + message."""

    loc: Loc
    message: str


def format_path(loc: Loc) -> str:
    """('materials', 1, 'density_kg_per_l') -> 'materials[1].density_kg_per_l'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


# Pydantic error types whose message is better said in TOML words.
_MESSAGES: Final[Mapping[str, str]] = {
    "missing": "missing required key",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "dict_type": "expected a table",
    "list_type": "expected an array",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_type": "expected true or false",
}


def pydantic_message(error: ErrorDetails, root: type[BaseModel]) -> str:
    """A short human sentence for one pydantic error; `root` is the model validated
    (unknown keys are looked up in the table they sit in)."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key_message(tuple(error["loc"]), root)
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    text = _MESSAGES.get(kind) or error["msg"].replace("Input should be", "must be")
    value = error.get("input")
    if kind != "missing" and isinstance(value, str | int | float):
        text += f" (got {value!r})"
    return text


def _unknown_key_message(loc: Loc, root: type[BaseModel]) -> str:
    key = loc[-1] if loc else None
    model = _model_at(loc[:-1], root)
    if model is None or not isinstance(key, str):
        return "unknown key"
    allowed = [field.alias or name for name, field in model.model_fields.items()]
    hint = did_you_mean(key, allowed)
    return f"unknown key{hint}" if hint else f"unknown key (allowed: {', '.join(allowed)})"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'X'?)' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(loc: Loc, root: type[BaseModel]) -> type[BaseModel] | None:
    """The config model class that sits at `loc`, by walking field annotations."""
    current: object = root
    for part in loc:
        if isinstance(part, int):
            if typing.get_origin(current) is not list:
                return None
            current = typing.get_args(current)[0]
        else:
            if not (isinstance(current, type) and issubclass(current, BaseModel)):
                return None
            fields = {f.alias or name: f for name, f in current.model_fields.items()}
            if part not in fields:
                return None
            current = _without_none(fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _without_none(annotation: object) -> object:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation
