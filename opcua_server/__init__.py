"""opcua_server: see README (arrives with a later issue)."""
