"""User callbacks for the runtime tests (signals, failures, resume): real Hydra targets, real signals."""

from __future__ import annotations

import json
import os
import signal

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

    def clear(self) -> None:
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))


class SignalAt(GridPointCallback):
    """Sends the process running ``series`` (the run's, or its series worker's) ``signum`` at grid point
    ``m``, once until ``SignalAt.fired.clear()`` (so that a resume in this test process is not signalled
    again)."""

    fired = _Marks()

    def __init__(self, series: str, m: int, signum: int = int(signal.SIGTERM)) -> None:
        super().__init__()
        self.series, self.m, self.signum = series, m, signum

    def on_grid_point(self, point, logger):
        if point.series == self.series and point.m >= self.m and SignalAt.fired.add_once((self.series, self.m)):
            os.kill(os.getpid(), self.signum)


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
