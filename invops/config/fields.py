"""Value types of the config file: ids, units, numbers, endpoints, addresses, hashes.

Each check here looks at one value on its own; the table models (`schema`,
`server_schema`) put them together, and checks that need more than one table
run later (`cross_checks`). A check raises ValueError, which pydantic reports
under the key it belongs to.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from inventory_core.domain.api_tokens import is_token_hash
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.passwords import PasswordHashError, parse_password_hash
from inventory_core.domain.units import canonical_uom, parse_quantity
from plc_connectors import Address, parse_address

__all__ = [
    "DEFAULT_API_LISTEN",
    "DEFAULT_CERTIFICATE_DIR",
    "DEFAULT_LEDGER_URL",
    "DEFAULT_METRICS_LISTEN",
    "DEFAULT_OPCUA_ENDPOINT",
    "ConfigModel",
    "DbUrl",
    "Directory",
    "ExactDecimal",
    "Identifier",
    "ListenAddress",
    "NonEmptyStr",
    "OpcuaEndpoint",
    "PasswordHash",
    "PlcAddress",
    "PositiveDecimal",
    "TokenHash",
    "Uom",
    "WriterId",
]

DEFAULT_LEDGER_URL: Final = "sqlite+aiosqlite:///var/invops.db"
DEFAULT_OPCUA_ENDPOINT: Final = "opc.tcp://127.0.0.1:4840/invops"
DEFAULT_METRICS_LISTEN: Final = "127.0.0.1:9840"
DEFAULT_API_LISTEN: Final = "127.0.0.1:9841"
DEFAULT_CERTIFICATE_DIR: Final = Path("var/pki")


_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_WRITER_ID_RE: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# A SQLAlchemy URL: dialect[+driver]://...
_DB_URL_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z0-9_]+)?://.*")
_HOST: Final = r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)"
_OPCUA_RE: Final = re.compile(rf"opc\.tcp://{_HOST}(?::(?P<port>\d{{1,5}}))?(?:/\S*)?")
_LISTEN_RE: Final = re.compile(rf"(?P<host>{_HOST}):(?P<port>\d{{1,5}})")


def _identifier(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"invalid id {value!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    return value


def _writer_id(value: str) -> str:
    if not _WRITER_ID_RE.fullmatch(value):
        raise ValueError(
            f"invalid writer id {value!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _uom(value: str) -> str:
    """Canonical spelling (`l` -> `L`) so the rest of the system compares units by string."""
    try:
        return canonical_uom(value)
    except InventoryError as exc:
        raise ValueError(str(exc)) from None


def _exact_decimal(value: object) -> Decimal:
    """An exact Decimal: TOML floats go through str(), so `0.80` is Decimal('0.8')."""
    try:
        return parse_quantity(value)
    except InventoryError:
        raise ValueError(f"expected a finite number below 1e12 (got {value!r})") from None


def _positive_decimal(value: object) -> Decimal:
    """An exact Decimal greater than 0."""
    number = _exact_decimal(value)
    if number <= 0:
        raise ValueError(f"must be greater than 0 (got {value!r})")
    return number


def _non_negative_decimal(value: object) -> Decimal:
    """An exact Decimal of at least 0."""
    number = _exact_decimal(value)
    if number < 0:
        raise ValueError(f"must be 0 or more (got {value!r})")
    return number


def _port(text: str) -> int:
    port = int(text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return port


def _opcua_endpoint(value: str) -> str:
    match = _OPCUA_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"expected opc.tcp://host:port/path (got {value!r})")
    if match["port"] is not None:
        _port(match["port"])
    return value


def _listen(value: str) -> str:
    match = _LISTEN_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"expected host:port such as 127.0.0.1:9840 (got {value!r})")
    _port(match["port"])
    return value


def _db_url(value: str) -> str:
    if not _DB_URL_RE.fullmatch(value):
        raise ValueError(
            f"expected a SQLAlchemy URL such as {DEFAULT_LEDGER_URL} or "
            f"postgresql+asyncpg://user@host/db (got {value!r})"
        )
    return value


def _address(value: object) -> Address:
    if isinstance(value, Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an address string such as hr:0 or DB1.DBD0 (got {value!r})")
    return parse_address(value)  # TagConfigError is a ValueError: reported under the key


def _password_hash(value: object) -> str:
    """A hash made by `invops users hash-password`; the value is never echoed back
    (a plain-text password pasted here must not end up in an error log)."""
    if not isinstance(value, str):
        raise ValueError("expected a password hash string (run invops users hash-password)")
    try:
        parse_password_hash(value)
    except PasswordHashError as exc:
        raise ValueError(f"{exc}: run invops users hash-password") from None
    return value


def _token_hash(value: object) -> str:
    """`sha256$<64 hex>` as `invops users create-token` prints it (never echoed back)."""
    if not isinstance(value, str) or not is_token_hash(value):
        raise ValueError("expected sha256$<64 hex digits> (run invops users create-token)")
    return value


def _directory(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
NonEmptyStr = Annotated[str, AfterValidator(_non_empty)]
Uom = Annotated[str, AfterValidator(_uom)]
PositiveDecimal = Annotated[Decimal, BeforeValidator(_positive_decimal)]
NonNegativeDecimal = Annotated[Decimal, BeforeValidator(_non_negative_decimal)]
ExactDecimal = Annotated[Decimal, BeforeValidator(_exact_decimal)]
WriterId = Annotated[str, AfterValidator(_writer_id)]
DbUrl = Annotated[str, AfterValidator(_db_url)]
OpcuaEndpoint = Annotated[str, AfterValidator(_opcua_endpoint)]
ListenAddress = Annotated[str, AfterValidator(_listen)]
PlcAddress = Annotated[Address, BeforeValidator(_address)]
PasswordHash = Annotated[str, BeforeValidator(_password_hash)]
TokenHash = Annotated[str, BeforeValidator(_token_hash)]
Directory = Annotated[Path, BeforeValidator(_directory)]


class ConfigModel(BaseModel):
    """Base of every config table: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
