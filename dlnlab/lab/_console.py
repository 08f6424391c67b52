"""The console's blocks, printed so that a reader of stdout that went away does not end the run."""

from __future__ import annotations

import os
import sys

__all__ = ["say"]


def say(text: str) -> None:
    """Print a block of the console. When the reader of stdout has gone (``train.py ... | head``) the run
    or sweep goes on without its console: stdout is pointed at /dev/null once, so that no later print (nor
    the interpreter's last flush) fails. Before, the BrokenPipeError ended a run with a traceback and exit
    code 1 after its files were written, before TensorBoard got its HParams and Text, and a joblib sweep's
    closing table raised out of its Hydra callback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
