"""CLI start-up cost: garbage collection while modules load, and at exit.

Importing SQLAlchemy (or asyncua) allocates hundreds of thousands of objects
and frees almost none, so the collector's passes over them during the imports,
and its final pass at interpreter exit, are wasted time: about a fifth of a
short command such as `invops ledger balance` (measured: 0.44 s -> 0.36 s for
the imports of that command alone).

`main()` calls `loading()` first; a command calls `loaded()` once its imports
are done and its real work (which may create garbage) begins; `exiting()`
lets the interpreter exit without walking every object again.
"""

from __future__ import annotations

import gc

__all__ = ["exiting", "loaded", "loading"]


def loading() -> None:
    """No collections while the command's modules load."""
    gc.disable()


def loaded() -> None:
    """Imports done: keep what they built out of every later collection, collect again."""
    gc.freeze()
    gc.enable()


def exiting() -> None:
    """The process ends: no final pass over objects that die with it."""
    gc.freeze()
