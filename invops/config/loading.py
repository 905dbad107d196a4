"""Reading a config: the TOML file, the INVOPS_* environment overrides, both passes.

Validation runs in two passes so that an engineer sees every mistake at once:
pydantic checks each table (pass 1), then `cross_checks` runs over whatever
survived (pass 2). Every problem is then placed: its key path, its line in the
file when it can be found, or the environment variable its value came from.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from invops.config.cross_checks import cross_check, parts_from_model, parts_from_raw
from invops.config.errors import (
    ConfigError,
    ConfigProblem,
    Issue,
    Loc,
    format_path,
    pydantic_message,
)
from invops.config.key_lines import KeyLines
from invops.config.schema import InvopsConfig

__all__ = ["ENV_OVERRIDES", "load_config", "parse_config"]

# Environment variable -> (table, key) it overrides (SPEC section 3).
ENV_OVERRIDES: Final[Mapping[str, tuple[str, str]]] = {
    "INVOPS_LEDGER_URL": ("ledger", "url"),
    "INVOPS_OPCUA_ENDPOINT": ("opcua", "endpoint"),
    "INVOPS_METRICS_LISTEN": ("metrics", "listen"),
    "INVOPS_API_LISTEN": ("api", "listen"),  # also turns the API on where [api] is absent
    "INVOPS_B2MML_SCHEMA_DIR": ("b2mml", "schema_dir"),
}


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> InvopsConfig:
    """Read, parse and validate a TOML config file; any problem is a ConfigError."""
    file = str(path)
    try:
        # utf-8-sig: tolerate the byte-order mark some Windows editors write.
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError([ConfigProblem(file, None, "", "file not found")]) from exc
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (bad byte at offset {exc.start})"
        raise ConfigError([ConfigProblem(file, None, "", message)]) from exc
    except OSError as exc:
        message = f"cannot read file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(file, None, "", message)]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(file, text, exc)]) from exc
    return parse_config(data, file=file, source_text=text, environ=environ)


def parse_config(
    data: Mapping[str, Any],
    file: str = "<config>",
    source_text: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> InvopsConfig:
    """Validate already-parsed TOML data (both passes), after environment overrides.

    `source_text` is only used to find line numbers for the problems.
    """
    if not isinstance(data, Mapping):
        raise ConfigError([ConfigProblem(file, None, "", "expected a table at the top level")])
    merged, overridden = _apply_env(data, os.environ if environ is None else environ)
    try:
        config = InvopsConfig.model_validate(merged)
    except ValidationError as exc:
        issues = [
            Issue(tuple(e["loc"]), pydantic_message(e, InvopsConfig))
            for e in exc.errors(include_url=False)
        ]
        issues += cross_check(parts_from_raw(merged))
    else:
        issues = cross_check(parts_from_model(config))
        if not issues:
            return config
    lines = KeyLines(source_text)
    problems = [_to_problem(issue, file, lines, overridden) for issue in issues]
    # File order reads best; problems without a line keep their order, last.
    problems.sort(key=lambda p: (p.line is None, p.line or 0))
    raise ConfigError(problems)


def _apply_env(
    data: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[Loc, str]]:
    """Copy of `data` with the INVOPS_* overrides applied, and which keys they replaced.

    An empty variable counts as unset, so `INVOPS_LEDGER_URL= invops ...` is harmless.
    """
    merged = dict(data)
    overridden: dict[Loc, str] = {}
    for variable, (table, key) in ENV_OVERRIDES.items():
        value = environ.get(variable)
        if not value:
            continue
        section = merged.get(table, {})
        if not isinstance(section, Mapping):
            continue  # the file's own type error is reported instead
        merged[table] = {**section, key: value}
        overridden[(table, key)] = variable
    return merged, overridden


_TOML_AT_LINE: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_AT_END: Final = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_problem(file: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigProblem:
    """tomllib puts the position in its message text; move it into `line`."""
    message = str(exc)
    line: int | None = getattr(exc, "lineno", None)  # Python >= 3.14 has it as an attribute
    if match := _TOML_AT_LINE.search(message):
        line = int(match[1])
        message = f"{message[: match.start()]} (column {match[2]})"
    elif match := _TOML_AT_END.search(message):
        line = max(1, len(text.splitlines()))
        message = f"{message[: match.start()]} (at end of file)"
    return ConfigProblem(file, line, "", f"TOML syntax error: {message}")


def _to_problem(
    issue: Issue, file: str, lines: KeyLines, overridden: Mapping[Loc, str]
) -> ConfigProblem:
    variable = overridden.get(issue.loc)
    if variable is not None:
        # The bad value came from the environment, not from any line of the file.
        return ConfigProblem(
            file, None, format_path(issue.loc), f"{issue.message} (from {variable})"
        )
    return ConfigProblem(file, lines.find(issue.loc), format_path(issue.loc), issue.message)
