"""The console's blocks and log lines, written so that a reader of stdout that went away does not end the
run, nor fill stderr with tracebacks.

Two writers reach stdout: the lab's blocks (:func:`say`) and Python logging, through the ``console``
handler of Hydra's logging configs (``hydra.hydra_logging``: the sweep's launch lines, "Launching 2 jobs
locally", "#0 : seed=0"; ``hydra.job_logging``: what a job logs). ``conf/train.yaml`` makes that handler
a :class:`ConsoleHandler`. Either writer, on meeting the gone reader, points the stream's file
descriptor at /dev/null once (:func:`_stream_gone`), so that no later write to it, by either, nor the
interpreter's last flush, fails.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["say", "ConsoleHandler"]


def say(text: str) -> None:
    """Print a block of the console. When the reader of stdout has gone (``train.py ... | head``) the run
    or sweep goes on without its console. Before, the BrokenPipeError ended a run with a traceback and exit
    code 1 after its files were written, before TensorBoard got its HParams and Text, and a joblib sweep's
    closing table raised out of its Hydra callback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _stream_gone(sys.stdout)


def _stream_gone(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what it still holds, and all it is given later,
    goes nowhere, without an error."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file's stream: its next write fails again, quietly
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class ConsoleHandler(logging.StreamHandler):
    """Hydra's console handler (``logging.StreamHandler`` on stdout in its logging configs), quiet once the
    reader of its stream has gone: logging's own hook for a failed ``emit``, :meth:`handleError`, drops the
    record and points the stream at /dev/null (:func:`_stream_gone`) when the failure was a
    BrokenPipeError. Any other failure is reported as logging reports it (``--- Logging error ---`` and
    its traceback on stderr). Before: under ``train.py -m ... | head`` each of Hydra's launch lines,
    logged before the lab's first block, printed that report and its 25-line traceback on stderr.

    ``logging.raiseExceptions = False`` would silence these too, but every other logging error as well, in
    every handler, with stdout fine; Hydra itself is left as it is."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            _stream_gone(self.stream)
            return
        super().handleError(record)
