"""plc_connectors: see README (arrives with a later issue)."""
