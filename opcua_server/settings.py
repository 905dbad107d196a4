"""What the OPC UA server is configured with: plain frozen data, built by `invops`.

The adapter never sees the config file's schema: `invops.wiring.opcua_settings`
converts `[site]`, `[opcua]`, `[[materials]]` and `[[storage_units]]` into these
once, at start-up, and `invops.wiring.opcua_security` the security keys of
`[opcua]` and the `[[users]]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inventory_core.domain.model import MaterialDefinition, StorageUnit
from inventory_core.domain.users import User
from inventory_core.logins import LoginSettings
from opcua_server.limits import ServerLimits

__all__ = ["OpcuaSecurity", "OpcuaSettings", "OpcuaUnit"]


@dataclass(frozen=True, slots=True)
class OpcuaUnit:
    """A storage unit as the address space shows it."""

    unit: StorageUnit
    level_uom: str = "mm"  # the level tag's unit (tanks measured by level)
    max_level: float | None = None  # top of the strapping table: Level's EURange


@dataclass(frozen=True, slots=True)
class OpcuaSettings:
    """The server's endpoint, policy switches, limits and the plant it shows."""

    endpoint: str
    site: str
    site_description: str = ""
    areas: tuple[str, ...] = ()  # in config order, shown even without units
    units: tuple[OpcuaUnit, ...] = ()
    materials: tuple[MaterialDefinition, ...] = ()
    allow_security_none: bool = False
    value_deadband_pct: float = 0.0
    denied_audit_window_s: float = 60.0
    limits: ServerLimits = field(default_factory=ServerLimits)


@dataclass(frozen=True, slots=True)
class OpcuaSecurity:
    """Over which endpoints and as whom a client may open a session (`security`).

    `security_policies` are `security.POLICY_TYPES` names, offered in this order;
    `anonymous` is "read" or "off". Checked where they are used: an unknown policy
    or mode is a SecuritySetupError of `security.secure_server_kwargs`.
    """

    endpoint: str  # its host name goes into the server's own certificate
    allow_security_none: bool
    security_policies: tuple[str, ...]
    anonymous: str
    logins: LoginSettings = field(default_factory=LoginSettings)
    users: tuple[User, ...] = ()
