"""`invops users ...`: user accounts (`[[users]]`) and API tokens (`[[api_tokens]]`).

Wired into the main app by `register(app)`.

`invops users hash-password` prints the hash to paste as `password_hash`. On a
terminal it asks twice without echo; otherwise it reads one line from standard
input (`echo -n secret | invops users hash-password`), so scripts and
provisioning tools never put the password on a command line.

`invops users create-token --name N --role R` prints a new HTTP API token once, and
the `[[api_tokens]]` lines to paste, which hold only its hash.
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, NoReturn

import typer

from inventory_core.domain.api_tokens import hash_token, new_token
from inventory_core.domain.passwords import hash_password
from inventory_core.domain.text import InvalidText, check_identifier
from inventory_core.domain.users import Role

__all__ = ["create_token_command", "hash_password_command", "register"]

EXIT_USER_ERROR = 1
MAX_PASSWORD_CHARS = 1024


def _fail(message: str) -> NoReturn:
    typer.echo(f"invops: error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _prompt_twice() -> str:
    try:
        first = getpass.getpass("Password: ")
        if not first:
            _fail("empty password: type at least one character")
        second = getpass.getpass("Repeat password: ")
    except EOFError:
        _fail("no password entered")
    if first != second:
        _fail("the two passwords differ: nothing printed")
    return first


def _read_stdin() -> str:
    raw = sys.stdin.buffer.readline(4 * MAX_PASSWORD_CHARS + 2)
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail("the password on standard input is not UTF-8 text")
    # Only the line end is removed: spaces may be part of a password.
    return line.removesuffix("\n").removesuffix("\r")


def hash_password_command() -> None:
    """Print the hash of a password for password_hash in a config users entry.

    On a terminal: asks twice, without echo. Otherwise: reads one line of standard input.
    """
    password = _prompt_twice() if sys.stdin.isatty() else _read_stdin()
    if not password:
        _fail("empty password: nothing to hash")
    if len(password) > MAX_PASSWORD_CHARS:
        _fail(f"password longer than {MAX_PASSWORD_CHARS} characters")
    typer.echo(hash_password(password))


def create_token_command(
    name: Annotated[
        str, typer.Option("--name", help="Who uses it (the audit trail's user), e.g. wms.")
    ],
    role: Annotated[Role, typer.Option("--role", help="Its role, as a [[users]] role.")],
) -> None:
    """Print a new HTTP API token once, and the [[api_tokens]] lines that hold its hash.

    The token itself is not stored anywhere: give it to its client now; if it is lost,
    create another and remove the old lines.
    """
    try:
        check_identifier("--name", name, max_length=64)
    except InvalidText as exc:
        _fail(str(exc))
    token = new_token()
    typer.echo(f"token (shown once): {token}")
    typer.echo("")
    typer.echo("[[api_tokens]]")
    typer.echo(f'name = "{name}"')
    typer.echo(f'role = "{role.value}"')
    typer.echo(f'token_hash = "{hash_token(token)}"')


def register(app: typer.Typer) -> None:
    """Add the `users` command group to the main app."""
    users_app = typer.Typer(
        help="Users and API tokens: password hashes for [[users]], tokens for [[api_tokens]].",
        no_args_is_help=True,
    )
    users_app.command("hash-password")(hash_password_command)
    users_app.command("create-token")(create_token_command)
    app.add_typer(users_app, name="users")
