"""http_api: the Level-4 HTTP API (SPEC section 8) for ERP, WMS and MES.

A FastAPI app on the same `Ledger` (rules, roles, audit) as the OPC UA methods and the
shell. It depends on `inventory_core` only; `invops.wiring` builds it from the config
and serves it with `invops.http_server.HttpServer` on `[api] listen`.
"""

from http_api.app import create_app
from http_api.auth import ApiAuth, Principal

__all__ = ["ApiAuth", "Principal", "create_app"]
