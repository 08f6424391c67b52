"""The core's one error type for bad arguments.

The core (network, problem, init, flow, ...) speaks in its own terms: ``ArgumentError.argument`` names
the function argument that is wrong (``"dims"``, ``"singular_values"``, ``"rtol"``), and the message
says what is allowed, without any config key. The lab maps arguments to its config keys.
"""

from __future__ import annotations

__all__ = ["ArgumentError"]


class ArgumentError(ValueError):
    """A bad argument of a core function; ``argument`` is its name (``str(err)`` says what is allowed)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument
