"""What a sweep says on the console (docs/runs.md, "Sweeps"): each line of a job run by a parallel launcher
tagged with its job, and the one-line refusals of a resume= that finds no run, job or sweep to finish. The
sweeps themselves through the command line, tagged (joblib) or not (basic), and the sweep's closing line
with its directory absolute: tests/test_sweeps.py."""

from __future__ import annotations

import io
import logging
import sys


class _Writes(io.StringIO):
    """A terminal's stand-in: records each write it gets, as one write() of a process is one write to
    a shared terminal or pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_a_tagged_stream_tags_every_line_and_hands_on_a_printed_block_in_one_write():
    """``print(block)`` writes the block, then its newline: held until the line ends, the block reaches
    the shared stream in one write (another job's line cannot land inside it), every line tagged, an
    empty one with the tag alone; a partial line waits for its end or a flush; a carriage return (a
    progress bar redrawn) starts a tagged line too. Not a terminal: auto progress bars stay off."""
    from dlnlab.lab._job_output import TaggedStream

    inner = _Writes()
    out = TaggedStream(inner, "[job 3]")
    print("dlnlab run\n  net  dims [4, 3]\n\n  output  /x/3_seed=1", file=out)
    assert inner.writes == [
        "[job 3] dlnlab run\n[job 3]   net  dims [4, 3]\n[job 3]\n[job 3]   output  /x/3_seed=1\n"
    ]
    out.write("partial")
    assert len(inner.writes) == 1  # held: the line has not ended
    out.write(" line\nnext ")
    assert len(inner.writes) == 1  # still in the middle of a line
    out.write("one\n")
    assert inner.writes[1] == "[job 3] partial line\n[job 3] next one\n"
    out.write("\r  flow  50%")
    out.flush()  # tqdm redraws its bar: a carriage return, the bar, a flush
    out.write("\r  flow 100%\n")
    assert inner.writes[2:] == ["\r[job 3]   flow  50%", "\r[job 3]   flow 100%\n"]
    assert inner.getvalue().count("[job 3]") == 8
    assert not out.isatty() and out.encoding == inner.encoding


def test_a_job_of_a_parallel_launcher_tags_stdout_stderr_and_logging_until_its_end(capsys):
    """tag_job_output in a job's process (SweepSummary.on_job_start where the launcher runs the job in a
    process other than the sweep's): print, stderr and a logging handler that held the original stream
    (Hydra's job logging) all tag their lines; untag_job_output (on_job_end) puts every stream back."""
    from dlnlab.lab._job_output import tag_job_output, untag_job_output

    out, err = sys.stdout, sys.stderr
    log = logging.getLogger("dlnlab.test_sweep_console")
    handler = logging.StreamHandler(sys.stdout)
    log.addHandler(handler)
    log.propagate = False
    try:
        tag_job_output(7)
        tag_job_output(12)  # the next job in the same worker, the first one's end missed: not tagged twice
        print("a result")
        print("an error", file=sys.stderr)
        log.warning("from logging")
        untag_job_output()
        assert (sys.stdout, sys.stderr, handler.stream) == (out, err, out)
        print("the sweep's own line")
        log.warning("logged after")
    finally:
        untag_job_output()
        log.removeHandler(handler)
    said = capsys.readouterr()
    assert said.out.splitlines() == [
        "[job 12] a result", "[job 12] from logging", "the sweep's own line", "logged after"
    ]  # fmt: skip
    assert said.err == "[job 12] an error\n"
