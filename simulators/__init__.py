"""simulators: see README (arrives with a later issue)."""
