"""invops: composition root (config, wiring, CLI, metrics)."""

__version__ = "0.1.0"
