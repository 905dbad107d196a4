"""information_model: see README (arrives with a later issue)."""
