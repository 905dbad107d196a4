"""Loading the config for a command: every problem on stderr, then exit 2 (SPEC section 1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from invops.config import InvopsConfig

EXIT_CONFIG_ERROR = 2


def load_config_or_exit(path: Path) -> InvopsConfig:
    """The validated config, or each problem as `file:line: path: message` and exit 2."""
    from invops.config import ConfigError, load_config  # pydantic: only for commands with a config

    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(EXIT_CONFIG_ERROR) from None
