"""A sweep job's console lines, each tagged with its job (``[job 3] ...``), where the jobs share a terminal.

Under a launcher that runs the jobs in processes of their own (joblib's workers; submitit's, whose
output goes to its log files), several jobs print at once: their start blocks, their results and their
errors came out side by side, and nothing on a line said whose it was. The basic launcher runs one job
after the other in the sweep's own process: its output is left as it is.

Why a tag on every line rather than each job's output held back and printed whole at its end: a
researcher watching a sweep sees each job start (its plan: the solver chosen, its directory) and each
error when it happens, not minutes later; a job killed, or a sweep stopped, loses no line it finished
(a SIGKILL: the line still open); and ``grep '^\\[job 3\\]'`` picks one job's lines out of the whole
console (or of a ``tee``'d log). The blocks stay whole too: a line, or a block written by one
``print``, reaches the terminal in one write (below), so another job's lines never land inside it.

:func:`tag_job_output` replaces ``sys.stdout`` and ``sys.stderr`` in the job's process (and points the
logging handlers that wrote to them at the replacements); :func:`untag_job_output` puts them back at
the job's end (joblib runs the next job in the same worker). What is written below Python, straight to
the file descriptors (a C library's own prints), is not tagged.
"""

from __future__ import annotations

import io
import logging
import os
import re
import select
import sys
import threading

__all__ = ["TaggedStream", "tag_job_output", "untag_job_output", "job_tag"]

_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")
_HOLD_AT_MOST = 1 << 16  # characters of unfinished lines held back before they are written anyway
# A pipe takes a write of at most PIPE_BUF bytes whole (POSIX: at least 512; Linux: 4096); a longer one
# from several processes at once can be cut anywhere by the others' (measured: three jobs printing
# blocks of 16 KB through one pipe broke 723 of 120,000 lines, untagged halves of two jobs' lines)
_WHOLE_WRITE = getattr(select, "PIPE_BUF", 512)


def job_tag(num: int) -> str:
    return f"[job {num}]"


class TaggedStream(io.TextIOBase):
    """A text stream that writes ``tag`` at the start of each line (an empty line: the tag alone) to
    ``inner``. Text is held until it ends a line, then written and flushed at once: ``print(block)``
    (the text, then its newline) is one write to the shared terminal or pipe, never cut by another
    job's line (a block-buffered pipe flushed wherever its buffer filled, mid-line); a block longer than
    a pipe takes whole (PIPE_BUF, 4096 bytes on Linux) is written in pieces cut between its lines, so
    other jobs' lines may come between them, never inside a line. ``flush`` writes
    what is held too (a progress bar redraws its line with a carriage return and a flush). A carriage
    return starts a line as a newline does, so a redrawn bar keeps its tag.

    ``isatty`` is False: the terminal is shared by several jobs, and a progress bar of each would draw
    over the others' (``log.progress=auto`` draws none; ``always`` still does)."""

    def __init__(self, inner, tag: str) -> None:
        super().__init__()
        self.inner, self.tag = inner, tag
        self._held: list[str] = []
        self._held_chars = 0
        self._line_start = True
        self._lock = threading.RLock()  # reentrant: a signal handler's or __del__'s print inside a write

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._held.append(text)
            self._held_chars += len(text)
            if text.endswith(("\n", "\r")) or self._held_chars > _HOLD_AT_MOST:
                self._forward()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._forward()

    def _forward(self) -> None:
        text = "".join(self._held)
        self._held.clear()
        self._held_chars = 0
        if not text:
            self.inner.flush()
            return
        for piece in _pieces(self._tagged(text), _WHOLE_WRITE):  # a write each, cut between lines only
            self.inner.write(piece)
            self.inner.flush()

    def _tagged(self, text: str) -> str:
        out = []
        for i, piece in enumerate(_LINE_BREAK.split(text)):
            if i % 2:  # a line break
                if self._line_start and "\n" in piece:  # an empty line: the tag alone (not a bare \r)
                    out.append(self.tag)
                out.append(piece)
                self._line_start = True
            elif piece:
                if self._line_start:
                    out.append(f"{self.tag} ")
                out.append(piece)
                self._line_start = False
        return "".join(out)

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:  # tqdm asks it for the terminal's width
        return self.inner.fileno()

    @property
    def encoding(self):
        return self.inner.encoding

    @property
    def errors(self):
        return self.inner.errors

    def __getattr__(self, name: str):  # buffer, line_buffering, ...: the inner stream's
        return getattr(self.inner, name)


def _pieces(text: str, limit: int) -> list[str]:
    """``text`` cut between lines into pieces of at most ``limit`` bytes in UTF-8 (a longer line: a piece
    of its own), so that a block of up to ``limit`` bytes stays one write and a longer one is cut only
    where a line ends."""
    pieces, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode("utf-8", "replace"))
        if current and size + n > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += n
    return [*pieces, "".join(current)] if current else pieces


def _fresh_locks_in_child() -> None:
    """A forked child (a series' worker process) starts with its streams' locks free: a thread of the
    parent may have held one at the fork."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, TaggedStream):
            stream._lock = threading.RLock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


def _handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        h
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler)
    ]


def tag_job_output(num: int) -> None:
    """From now on, every line this process prints on stdout and stderr starts with ``[job <num>]``."""
    untag_job_output()  # a job before it in this worker whose end did not come
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = TaggedStream(out, job_tag(num)), TaggedStream(err, job_tag(num))
    tagged = {id(out): sys.stdout, id(err): sys.stderr}
    for handler in _handlers():  # Hydra's job logging holds the stream it was given: the original
        if id(handler.stream) in tagged:
            handler.setStream(tagged[id(handler.stream)])


def untag_job_output() -> None:
    """Back to the streams :func:`tag_job_output` replaced, what they hold written first."""
    tagged = [s for s in (sys.stdout, sys.stderr) if isinstance(s, TaggedStream)]
    for stream in tagged:
        stream.flush()
    for handler in _handlers():
        if isinstance(handler.stream, TaggedStream):
            handler.setStream(handler.stream.inner)
    if isinstance(sys.stdout, TaggedStream):
        sys.stdout = sys.stdout.inner
    if isinstance(sys.stderr, TaggedStream):
        sys.stderr = sys.stderr.inner
