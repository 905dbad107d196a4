"""The invops configuration file: its pydantic models, its loader and its problems.

`load_config` (or `parse_config` for already-parsed TOML) gives a validated
`InvopsConfig` or raises a `ConfigError` listing every problem, each with its key
path (`storage_units[2].area`) and, when it can be found, its line. The package is
split by concept so that each part can be read alone:

* `fields`, `schema`, `server_schema`: the models and their per-value checks (pass 1);
* `cross_checks`: checks between tables (pass 2);
* `loading`: TOML, INVOPS_* environment overrides, both passes; `key_lines`: lines;
* `errors`: ConfigProblem/ConfigError and how each message is worded.

Import from here: the names below are the package's interface.
"""

from invops.config.errors import ConfigError, ConfigProblem
from invops.config.fields import (
    DEFAULT_CERTIFICATE_DIR,
    DEFAULT_LEDGER_URL,
    DEFAULT_METRICS_LISTEN,
    DEFAULT_OPCUA_ENDPOINT,
)
from invops.config.loading import ENV_OVERRIDES, load_config, parse_config
from invops.config.schema import (
    AlarmConfig,
    InvopsConfig,
    LedgerConfig,
    MaterialConfig,
    PlcConfig,
    SiteConfig,
    StorageUnitConfig,
    StrappingConfig,
    TagConfig,
    UserConfig,
    tag_of,
)
from invops.config.server_schema import (
    SECURE_POLICIES,
    AnonymousAccess,
    HttpListenerConfig,
    MetricsConfig,
    OpcuaConfig,
    SecurityPolicyName,
)

__all__ = [
    "DEFAULT_CERTIFICATE_DIR",
    "DEFAULT_LEDGER_URL",
    "DEFAULT_METRICS_LISTEN",
    "DEFAULT_OPCUA_ENDPOINT",
    "ENV_OVERRIDES",
    "SECURE_POLICIES",
    "AlarmConfig",
    "AnonymousAccess",
    "ConfigError",
    "ConfigProblem",
    "HttpListenerConfig",
    "InvopsConfig",
    "LedgerConfig",
    "MaterialConfig",
    "MetricsConfig",
    "OpcuaConfig",
    "PlcConfig",
    "SecurityPolicyName",
    "SiteConfig",
    "StorageUnitConfig",
    "StrappingConfig",
    "TagConfig",
    "UserConfig",
    "load_config",
    "parse_config",
    "tag_of",
]
