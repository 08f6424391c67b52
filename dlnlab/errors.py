"""The core's one error type for bad arguments, and dlnlab's warning categories.

The core (network, problem, init, flow, ...) speaks in its own terms: ``ArgumentError.argument`` names
the function argument that is wrong (``"dims"``, ``"singular_values"``, ``"rtol"``), and the message
says what is allowed, without any config key. The lab maps arguments to its config keys.

Every warning dlnlab gives goes through :mod:`warnings` with a category below :class:`DlnlabWarning`,
so a user filters or captures them as any other (``warnings.simplefilter("ignore", dlnlab.DlnlabWarning)``,
``pytest.warns(dlnlab.SeriesWarning)``, ``-W error::dlnlab.errors.AnalysisWarning``). A run shows each on
the console as one line, ``warning: <message>`` (:func:`dlnlab.lab.config.console_warnings`).
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "DlnlabWarning",
    "ConfigWarning",
    "SeriesWarning",
    "AnalysisWarning",
    "FileWarning",
]


class ArgumentError(ValueError):
    """A bad argument of a core function: ``argument`` is its name, ``message`` says what is wrong and
    what is allowed, and ``str(err)`` is one line that names the argument: ``"momentum: must be in
    [0, 1), got 1"`` (a message whose first word is the name, ``"theta0 has shape ..."``, is kept as
    it is). The lab puts its config key in front of ``message`` instead."""

    def __init__(self, argument: str, message: str) -> None:
        # named already where the message's first word is the argument ("theta0 has ...", "events[0] ...");
        # "the arrays ..." of argument "t" is not
        after = message[len(argument) : len(argument) + 1]
        named_first = message.startswith(argument) and not (after.isalnum() or after == "_")
        named = message if named_first else f"{argument}: {message}"
        super().__init__(named)
        self.argument = argument
        self.message = message


class DlnlabWarning(UserWarning):
    """Every warning of dlnlab (the run, or the script, goes on)."""


class ConfigWarning(DlnlabWarning):
    """A setting that runs but likely not as meant (a learning rate above the stability threshold)."""


class SeriesWarning(DlnlabWarning):
    """A series of a run stopped early, diverged or failed, or a part of it did (its logger, recorder,
    a user's callback): recorded in its summary entry; the other series still run."""


class AnalysisWarning(DlnlabWarning):
    """A step after the series failed (the saddle analysis, a figure, logging the results): the run's
    files are complete; what is missing is said in the summary or the figure."""


class FileWarning(DlnlabWarning):
    """A file of a run directory cannot be read: the reader goes on without it."""
