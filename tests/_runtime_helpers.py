"""User callbacks for the runtime tests (signals, failures, resume): real Hydra targets, real signals."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import time

from dlnlab.lab.callbacks import GridPointCallback


class RaiseAt(GridPointCallback):
    """Raises ValueError at grid point ``m`` of every series (or only of ``series``)."""

    def __init__(self, m: int = 3, series: str | None = None) -> None:
        super().__init__()
        self.m, self.series = m, series

    def on_grid_point(self, point, logger):
        if point.m == self.m and self.series in (None, point.series):
            raise ValueError(f"boom at {point.series} m = {point.m}")


class _Marks:
    """A set of keys kept as files in a directory of this test process: the run's series workers
    (forked processes) add to it and see each other's additions."""

    def __init__(self) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="dlnlab-signal-marks-")

    def _path(self, key) -> str:
        return os.path.join(self.dir, "-".join(map(str, key)))

    def add_once(self, key) -> bool:
        """Add ``key``; False if it was there (atomic across processes)."""
        try:
            os.close(os.open(self._path(key), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def has(self, key) -> bool:
        return os.path.exists(self._path(key))

    def clear(self) -> None:
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))


class SignalAt(GridPointCallback):
    """Sends the process running ``series`` (the run's, or its series worker's) ``signum`` at grid point
    ``m``, once until ``SignalAt.fired.clear()`` (so that a resume in this test process is not signalled
    again). ``driver``: to the run's process instead (a series worker's parent), which has it at once,
    before any other unit can end (a worker's own signal reaches the driver only with its outcome)."""

    fired = _Marks()

    def __init__(self, series: str, m: int, signum: int = int(signal.SIGTERM), driver: bool = False) -> None:
        super().__init__()
        self.series, self.m, self.signum, self.driver = series, m, signum, driver

    def on_grid_point(self, point, logger):
        if (
            point.series == self.series
            and point.m >= self.m
            and SignalAt.fired.add_once((self.series, self.m))
        ):
            os.kill(os.getppid() if self.driver else os.getpid(), self.signum)
            SignalAt.fired.add_once(("sent", self.series, self.m))  # for HoldUntilSent


class HoldUntilSent(GridPointCallback):
    """Holds ``series`` at grid point ``m`` until the SignalAt of ``sender`` at ``sender_m`` has sent its
    signal (at most 120 s): so that this series cannot end first, however the machine schedules the
    workers (a test whose driver must have the signal before any unit ends)."""

    def __init__(self, series: str, m: int, sender: str, sender_m: int) -> None:
        super().__init__()
        self.series, self.m, self.sender, self.sender_m = series, m, sender, sender_m

    def on_grid_point(self, point, logger):
        if point.series != self.series or point.m != self.m:
            return
        deadline = time.monotonic() + 120
        while not SignalAt.fired.has(("sent", self.sender, self.sender_m)) and time.monotonic() < deadline:
            time.sleep(0.01)


class SignalOnce(GridPointCallback):
    """Sends this process ``signum`` at grid point ``m`` of ``series`` unless the file ``flag`` exists, and
    makes it: once per flag, so that a resume in another process (the CLI's) is not signalled again."""

    def __init__(self, series: str, m: int, flag: str, signum: int = int(signal.SIGTERM)) -> None:
        super().__init__()
        self.series, self.m, self.flag, self.signum = series, m, flag, signum

    def on_grid_point(self, point, logger):
        if point.series == self.series and point.m >= self.m and not os.path.exists(self.flag):
            open(self.flag, "x").close()
            os.kill(os.getpid(), self.signum)


class HoldFigureWorkers(GridPointCallback):
    """Holds each figure worker of the run (forked in its figures stage: dlnlab/plots/run_figures.py)
    until a SIGTERM reaches it, having made the file ``ready``. A test that sends the signal to the
    run's process group once ``ready`` exists has it land while the run waits for its drawing, however
    slow the machine (the figures of the default run take about a second: a signal sent when the
    summary says "figures" could come after them). Only for a run in a process of its own: the hook
    is registered at fork, for the life of the process."""

    def __init__(self, run_dir: str, ready: str) -> None:
        super().__init__()
        self.run_dir, self.ready = run_dir, ready
        os.register_at_fork(after_in_child=self._hold)

    def on_grid_point(self, point, logger):
        pass

    def _hold(self) -> None:
        try:  # the run's other forks (the flow ahead, the series and recorder workers) come earlier
            with open(os.path.join(self.run_dir, "summary.json")) as f:
                if json.load(f).get("stage") != "figures":
                    return
        except (OSError, ValueError):
            return
        # the lab forks its workers with both signals blocked, so the group's SIGTERM waits here for
        # sigtimedwait (and is then gone: the worker goes on to draw, as one that ignores it)
        if signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, []):
            return
        with contextlib.suppress(FileExistsError):
            open(self.ready, "x").close()
        signal.sigtimedwait({signal.SIGTERM}, 120)


class HoldStageEnd(GridPointCallback):
    """Replaces the function ``target`` (a dotted name the driver looks up when its stage starts, e.g.
    ``dlnlab.lab.results.analyze_run_saddles``) by one that calls it and then, unless a signal has come
    meanwhile, waits for one before returning: the stage cannot end before the test's signal, which
    lands during the real work when the test is quick, at worst at the stage's end. Only for a run in
    a process of its own."""

    def __init__(self, target: str) -> None:
        super().__init__()
        module_name, name = target.rsplit(".", 1)
        module = importlib.import_module(module_name)
        work = getattr(module, name)

        def held(*args, **kwargs):
            from dlnlab.rundir import signals

            out = work(*args, **kwargs)
            deadline = time.monotonic() + 120
            while signals.received() is None:  # the handler raises out of the sleep
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target}: no signal came within 120 s")
                time.sleep(0.02)
            return out

        setattr(module, name, held)

    def on_grid_point(self, point, logger):
        pass


class Peek(GridPointCallback):
    """At the flow's first grid point: records summary.json as it is then, and calls ``probe`` (a
    dotted name of a function of the run directory) whose result or error is kept too."""

    seen: list = []

    def __init__(self, run_dir: str, probe: str | None = None) -> None:
        super().__init__()
        self.run_dir, self.probe = run_dir, probe

    def on_grid_point(self, point, logger):
        if point.series != "flow" or point.m != 0:
            return
        with open(os.path.join(self.run_dir, "summary.json")) as f:
            record = {"summary": json.load(f)}
        if self.probe:
            import importlib

            module, name = self.probe.rsplit(".", 1)
            try:
                record["probe"] = getattr(importlib.import_module(module), name)(self.run_dir)
            except Exception as err:  # noqa: BLE001 - the test reads it
                record["probe_error"] = f"{type(err).__name__}: {err}"
        Peek.seen.append(record)


def resume_now(run_dir: str):
    """A probe: try to resume the run directory while its run is going."""
    from dlnlab.lab.runner import resume

    return resume(run_dir)


class Unmakeable(GridPointCallback):
    """A callback whose constructor raises."""

    def __init__(self) -> None:
        raise RuntimeError("no licence")


def csv_logger_failing_for(series: str):
    """A Lightning CSVLogger class that cannot be made for ``series`` (the logger's version)."""
    from lightning.pytorch.loggers import CSVLogger

    class FailingFor(CSVLogger):
        def __init__(self, save_dir, name="lightning_logs", version=None):
            if version == series:
                raise OSError(f"no space left for {series}")
            super().__init__(save_dir, name=name, version=version)

    return FailingFor


FailsForSlowSeries = csv_logger_failing_for("sgd_lr_0.04")
