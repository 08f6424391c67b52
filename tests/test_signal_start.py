"""A signal while the command line starts: during the imports, and inside Hydra's composition (the
preflight's). Either way the process ends as the signal (143), at once, with nothing written.

Raised inside Hydra's or OmegaConf's code, a signal's KeyboardInterrupt can come out as another error
(a config source closes a file it never opened: UnboundLocalError; a composition error; OmegaConf's
flag cache on a None parent) or as a refusal: the CLI once answered a SIGTERM 0.5 s after its start with
"error: defaults: no such key", exit 2. The composition therefore holds signals to its end
(:func:`dlnlab.rundir.signals.deferred`). The signal is injected at the k-th Python call into Hydra or
OmegaConf (a profile hook), so where it lands is the same on every run."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

import hydra
import pytest

from dlnlab.lab.cli import job, main, preflight
from dlnlab.lab.runner import release_claims
from dlnlab.rundir import signals
from tests._helpers import QUIET
from tests._helpers import popen_cli as _popen

CONF = Path(__file__).resolve().parents[1] / "conf"
STACK = ("/hydra/", "/omegaconf/")
OWN = ("signals.py", "contextlib.py")


def _signal_at(k: int, calls: list[int]):
    """A profile hook that sends SIGTERM to this process at the k-th call into Hydra or OmegaConf (and
    counts them in ``calls[0]``)."""

    def profile(frame, event, arg):
        if event == "call" and any(s in frame.f_code.co_filename for s in STACK):
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGTERM)
                sys.setprofile(None)  # the rest at full speed

    return profile


def _interrupted_frame(err: BaseException) -> tuple[str, str]:
    """(file name, function) of the frame the signal's exception was raised in, past the signal
    handling's own frames (signals.py, contextlib's exit of a deferral)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).name not in OWN]
    return Path(frames[-1].filename).name, frames[-1].name


def _preflight_signalled_at(k: int, run_dir: Path) -> tuple[str, int]:
    """Run the preflight of the tiny experiment with a SIGTERM sent at the k-th call into Hydra or
    OmegaConf: ("interrupted in <file>", calls) when it was raised as the signal, else what came out
    instead; ``calls``: how many such calls the preflight made (k past them: no signal)."""
    calls = [0]
    signals.reset()
    signals.install()
    try:
        sys.setprofile(_signal_at(k, calls))
        try:
            reason = preflight(["experiment=tiny", f"hydra.run.dir={run_dir}"], CONF, claim=True)
        finally:
            sys.setprofile(None)
        return f"returned {reason!r}", calls[0]
    except signals.Interrupted as err:
        return f"interrupted in {_interrupted_frame(err)[0]}", calls[0]
    except BaseException as err:  # what the signal must never become
        return f"{type(err).__name__}: {err}", calls[0]
    finally:
        signals.uninstall()
        signals.reset()
        release_claims()


def test_a_signal_inside_the_composition_is_raised_when_it_has_finished(tmp_path):
    """At the 40,000th call into Hydra or OmegaConf (inside the composition: it makes ~100,000) the
    signal is held, then raised by the deferral's end, outside their code; the claimed run directory is
    gone. Without the deferral it is raised inside Hydra's code (and at 6,001 came out as a refusal)."""
    outcome, calls = _preflight_signalled_at(40_000, tmp_path / "run")
    assert calls == 40_000 and outcome == "interrupted in cli.py"
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # ~20 s: 60 preflights; in the default set: the same at one call (above)
def test_a_signal_anywhere_in_the_preflight_ends_it_as_the_signal(tmp_path):
    """Every 2000th call into Hydra or OmegaConf of the whole preflight (the composition, held, and the
    run's checks after it, where the signal is raised where it lands): each ends as the signal. Before
    the deferral, 4 of the first 13 points came out as refusals ("defaults: no such key")."""
    _, total = _preflight_signalled_at(0, tmp_path / "counted")
    outcomes = {k: _preflight_signalled_at(k, tmp_path / f"run_{k}")[0] for k in range(1, total, 2000)}
    wrong = {k: o for k, o in outcomes.items() if not o.startswith("interrupted")}
    assert not wrong, wrong
    assert not [p for p in tmp_path.iterdir() if p.name != "counted"]


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler yet (Linux: the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the handler mask in /proc")
def test_a_signal_while_importing_ends_at_once_and_writes_nothing(tmp_path):
    """Sent as soon as train.py's first handler is in place (its first lines, before ~0.4 s of imports)."""
    out = tmp_path / "run"
    proc = _popen(["experiment=tiny", *QUIET, f"hydra.run.dir={out}"], tmp_path)
    deadline = time.monotonic() + 30
    while not _catches_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted while starting (SIGTERM); nothing was written" in err
    assert "Traceback" not in err and not out.exists()


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="train")
def _train(cfg) -> int:
    return job(cfg)


def test_a_signal_inside_hydras_own_composition_is_raised_where_the_task_starts(tmp_path, monkeypatch):
    """The CLI in this process: Hydra composes the job's config again before it calls the task; a
    SIGTERM at its 40,000th call into Hydra or OmegaConf (inside that composition: ~100,000) is held and
    raised where the task starts (:func:`dlnlab.lab.cli.job`); exit 143, the run never started."""
    argv = [
        "experiment=tiny",
        *QUIET,
        "logger=none",
        "hydra.job.name=train",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])  # Hydra's main reads its command line there
    raised: list[BaseException] = []

    def hydra_main() -> None:
        sys.setprofile(_signal_at(40_000, [0]))
        try:
            _train()
        except BaseException as err:
            raised.append(err)
            raise
        finally:
            sys.setprofile(None)

    signals.reset()
    try:
        assert main(hydra_main, CONF, argv=argv) == 143
    finally:
        signals.reset()
    assert isinstance(raised[0], signals.Interrupted)
    assert _interrupted_frame(raised[0]) == ("cli.py", "_release_hydra_hold")  # called first thing in job()
    assert not (tmp_path / "run" / "summary.json").exists()
