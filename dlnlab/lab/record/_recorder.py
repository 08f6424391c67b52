"""The recorder of one series: snapshots -> :class:`~dlnlab.metrics.SeriesMetrics` -> the logger + npz.

The flow records in-process; an SGD series hands its snapshots (through the metrics callback) to a
recorder in a forked worker process, so that the metrics and the logging run on the other core while
the hot loop runs here (measured: about 5 gradient steps of work per grid point, which would cost the
loop 30 % and more at lr = 0.01 in-process). The worker logs through a copy of the series' logger
(its own writer, in the same log directory) and writes ``series/<name>.npz`` atomically at the end.
"""

from __future__ import annotations

import atexit
import multiprocessing
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dlnlab.lab.record._logging import fresh_copy, writes_concurrently
from dlnlab.lab.record._tags import TagPlan, Thinner, extreme_lines, note_extremes, series_tags
from dlnlab.metrics import MEMBERLESS_KEYS, SeriesMetrics
from dlnlab.rundir import out_of_room, save_npz, signals

__all__ = ["SeriesRecorder", "open_recorder", "end_workers", "block_points", "forget_inherited"]

# A block of snapshots is handed on (to the metrics, or to the worker) at 256 points or 32 MB of theta,
# whichever comes first: on a wide net (p = 524,288, 4 MB a snapshot) 256 points would hold 1 GB and the
# worker would only start at the end of the series (measured: 8 s of waiting at width 256, depth 8).
BLOCK_BYTES = 32e6
SEND_QUEUE = 8  # blocks waiting for a worker (see _ProcessRecorder)
ABORT_WAIT_S = 20.0  # an aborted worker writes what it has, then exits; killed if it takes longer
_DONE, _FAILED = "done", "failed"  # the worker's last word on its pipe: its arrays, or its traceback
_LIVE: set = set()  # this process's recorder workers not yet closed (see end_workers)


def block_points(block: int, theta: Tensor) -> int:
    """How many points a recorder computes together: ``block``, or fewer when their thetas pass
    BLOCK_BYTES. A series' blocks are its points [0, B), [B, 2B), ...: a point's metrics can depend on
    the block it is computed in (a batched product's rounding depends on the batch), so a resumed series
    keeps these boundaries (see :class:`~dlnlab.lab.callbacks.MetricsCallback`)."""
    return max(1, min(block, int(BLOCK_BYTES // max(theta.numel() * theta.element_size(), 1))))


_block_size = block_points


def _on_cpu(theta: Tensor, copy: bool) -> Tensor:
    theta = theta.detach()
    if theta.device.type != "cpu":
        return theta.cpu()
    return theta.clone() if copy else theta


class SeriesRecorder:
    """Records one series (the flow or one SGD learning rate) on the grid t_m = m dt.

    Args:
        name: ``flow`` or ``sgd_lr_<lr>``.
        metrics: the series' metrics component.
        n_grid: number of grid points M + 1 (m = 0..M).
        out_dir: the run directory (``series/<name>.npz`` goes there).
        logger: a Lightning logger (None: npz only).
        tags: what the series logs and at which step (:class:`~dlnlab.lab.record._tags.TagPlan`; needed with a
            logger).
        tb_max_points: every grid point is logged up to this many; above, each bucket's extremes.
        initial: arrays already recorded (a resumed series): kept, and not logged again.
        defer_logging: keep the logger's rows in ``deferred_rows`` instead of logging them (a worker
            whose logger cannot write beside the parent's, see ``writes_concurrently``).
        quiet_upto: grid points up to this index are recorded but not logged (a resumed series records
            its open block again; the interrupted run had logged it).

    Metrics are computed when ``block`` points are buffered (vectorised over the block).
    """

    def __init__(
        self,
        name: str,
        metrics: SeriesMetrics,
        n_grid: int,
        out_dir: str | Path,
        logger=None,
        tags: TagPlan | None = None,
        tb_max_points: int = 1000,
        block: int = 256,
        initial: dict[str, np.ndarray] | None = None,
        defer_logging: bool = False,
        quiet_upto: int = -1,
    ) -> None:
        self.name, self.metrics, self.n_grid, self.tags = name, metrics, n_grid, tags
        self.quiet_upto = quiet_upto
        self.out_dir, self.logger, self.block = Path(out_dir), logger, block
        self.thinner = Thinner(n_grid, tb_max_points)
        self._extremes: dict[str, float] = {}  # tag -> its extreme so far (drawn as a line at the end)
        self._logged_steps: list[int] = []
        self.defer_logging = defer_logging
        self.deferred_rows: list[tuple[int, dict[str, float]]] = []
        self._pending: list[tuple[int, float, int | None, Tensor]] = []
        initial = self._member_axis(initial or {}, to_front=False)
        self._chunks: dict[str, list[np.ndarray]] = {k: [v] for k, v in initial.items()}
        if logger is not None and initial.get("grid_index") is not None and len(initial["grid_index"]):
            # a resumed series: its extremes so far, and the steps its lines cover (one per bucket)
            for tags_row in series_tags(initial, tags):
                note_extremes(self._extremes, tags_row)
            self._logged_steps = [tags.step(int(m)) for m in initial["grid_index"][:: self.thinner.bucket]]

    def record(self, m: int, t: float, theta: Tensor, step: int | None = None, copy: bool = True) -> None:
        """Buffer grid point m at exact time t (theta (p,) is copied unless ``copy=False``; a GPU tensor is
        brought to the CPU, where the metrics are computed)."""
        self._pending.append((int(m), float(t), step, _on_cpu(theta, copy)))
        if len(self._pending) >= _block_size(self.block, theta):
            self.flush()

    def record_many(self, ms: Sequence[int], ts: Sequence[float], thetas: Tensor, steps=None) -> None:
        """Buffer several grid points at once; thetas (K, p)."""
        for i, (m, t) in enumerate(zip(ms, ts)):
            self.record(m, t, thetas[i], None if steps is None else steps[i], copy=False)

    def flush(self) -> None:
        """Compute the metrics of the buffered points and log them."""
        if not self._pending:
            return
        block, self._pending = self._pending, []
        ms = [p[0] for p in block]
        ts = torch.tensor([p[1] for p in block], dtype=torch.float64)
        thetas = torch.stack([p[3] for p in block])
        values = self.metrics.compute(ms, ts, thetas, [p[2] for p in block])
        for key, val in values.items():
            self._chunks.setdefault(key, []).append(val)
        if self.logger is not None:
            for m, tags in zip(ms, series_tags(values, self.tags)):
                note_extremes(self._extremes, tags)
                self._log(self.thinner.add(m, tags))

    def _log(self, rows: list[tuple[int, dict[str, float]]], grid: bool = True) -> None:
        """Log rows (grid index m, tags) at the series' steps (``grid=False``: rows already at steps);
        grid points up to ``quiet_upto`` (logged before a resume) are not logged again."""
        if grid:
            self._logged_steps += [self.tags.step(m) for m, _ in rows]  # the quiet ones too: logged before
            rows = [(self.tags.step(m), row) for m, row in rows if m > self.quiet_upto]
        if self.defer_logging:
            self.deferred_rows += rows
        else:
            for step, row in rows:
                self.logger.log_metrics(row, step=step)

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything recorded so far, concatenated along the grid (an ensemble: member axis first)."""
        self.flush()
        return self._member_axis({k: np.concatenate(v, axis=0) for k, v in self._chunks.items()}, True)

    def _member_axis(self, arrays: dict, to_front: bool) -> dict:
        """An ensemble's arrays between the metrics' grid-major (T, E, ...) and the file's (E, T, ...)."""
        if not self.metrics.members:
            return dict(arrays)
        src, dst = (1, 0) if to_front else (0, 1)
        return {k: v if k in MEMBERLESS_KEYS else np.moveaxis(v, src, dst) for k, v in arrays.items()}

    def close(self, path: str | Path | None = None, lines: bool = True) -> dict[str, np.ndarray]:
        """Flush, write ``series/<name>.npz``, finalise the logger; returns the arrays. ``lines``: log the
        extreme lines (the series ended). A series that stopped before its end (a signal, an error) draws
        none: a resume that continues it draws them once, over every step, with the final extremes
        (drawn at both closes, the steps before the stop got two values, and twice the points)."""
        arrays = self.arrays()
        if self.logger is not None:
            self._log(self.thinner.flush())
            if lines:
                self._log(extreme_lines(self._extremes, sorted(set(self._logged_steps))), grid=False)
        target = Path(path) if path is not None else self.out_dir / "series" / f"{self.name}.npz"
        if arrays:  # nothing recorded (stopped before its first point): an earlier file stays as it was
            save_npz(target, **arrays)  # atomic: a reader never sees half a file
        if self.logger is not None and not self.defer_logging:
            self.logger.finalize("success")
        return arrays


class _ProcessRecorder:
    """A :class:`SeriesRecorder` living in a forked worker process.

    The hot loop only buffers snapshots and ships them in blocks through a pipe; metrics, logging and
    the npz are the worker's, on another core (no GIL shared). ``close()`` returns the same arrays as
    ``SeriesRecorder.close()``.
    """

    def __init__(self, *args, block: int = 256, **kwargs) -> None:
        # preload=(ms, ts, thetas): points the worker records first. They reach it through the fork
        # (copy-on-write), not the pipe: a pipe only takes a block when the worker reads it, which made
        # the parent wait for the worker's metrics (5.6 s of the flow at width 256, depth 8).
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_recorder_worker, args=(child, self._conn, args, kwargs), daemon=True)
        # the child ignores SIGINT/SIGTERM before it can get one; a signal meanwhile is only noted (the
        # caller stops at its next check), so the worker is always registered for end_workers
        with signals.blocked_in_children():
            self._proc.start()
            child.close()
            _LIVE.add(self)
        self.name, self.block = args[0], block
        self._pending: list = []
        self.deferred_rows: list = []
        # Blocks go to the pipe from a thread: a send only returns once the worker reads, and the worker
        # reads between blocks of metrics, so sending from the loop made the loop wait for the worker
        # (the flow, which hands its points to the worker while the solver runs). At most SEND_QUEUE
        # blocks wait (BLOCK_BYTES each): beyond that the loop waits, as before.
        self._queue: queue.Queue = queue.Queue(maxsize=SEND_QUEUE)
        self._send_error: BaseException | None = None
        self._sender = threading.Thread(target=self._send_loop, name=f"recorder-{self.name}", daemon=True)
        self._sender.start()

    def _send_loop(self) -> None:
        while (msg := self._queue.get()) is not None:
            if self._send_error is None:
                try:
                    self._conn.send(msg)
                except BaseException as err:  # noqa: BLE001 - raised by the next flush or close
                    self._send_error = err  # and the queue is still drained, so no put waits forever

    def record(self, m: int, t: float, theta: Tensor, step: int | None = None, copy: bool = True) -> None:
        self._pending.append((int(m), float(t), step, _on_cpu(theta, copy)))
        if len(self._pending) >= _block_size(self.block, theta):
            self.flush()

    def _check_worker(self) -> None:
        """Raise the worker's own error (with its traceback) if it has failed."""
        if self._conn.poll():
            status, payload = self._conn.recv()
            raise RuntimeError(f"recorder worker of {self.name} failed:{_on_its_line(payload)}")

    def flush(self) -> None:
        if not self._pending:
            return
        self._check_worker()
        if self._send_error is not None:
            raise RuntimeError(f"recorder worker of {self.name}: {self._send_error!r}")
        block, self._pending = self._pending, []
        thetas = torch.stack([p[3] for p in block]).numpy()
        self._queue.put(
            ("block", [p[0] for p in block], [p[1] for p in block], [p[2] for p in block], thetas)
        )

    def close(self, path: str | Path | None = None, lines: bool = True) -> dict[str, np.ndarray]:
        try:
            try:
                self.flush()
            finally:
                self._queue.put(None)
                self._sender.join()
            if self._send_error is not None:
                raise self._send_error
            self._conn.send(("close", path, lines))
            status, payload = self._conn.recv()
        except (BrokenPipeError, EOFError) as err:
            self.abort()
            raise RuntimeError(f"recorder worker of {self.name} exited ({err})") from err
        except BaseException:
            self.abort()  # the worker writes what it has and ends: never left behind
            raise
        self._proc.join()
        self._conn.close()
        _LIVE.discard(self)
        if status != _DONE:
            raise RuntimeError(f"recorder worker of {self.name} failed:{_on_its_line(payload)}")
        arrays, self.deferred_rows = payload
        return arrays

    def abort(self) -> None:
        """End the worker without waiting for the series: it gets end-of-file, writes what it has recorded
        (``series/<name>.npz``, atomically) and exits; after ``ABORT_WAIT_S`` it is killed. Never raises."""
        _LIVE.discard(self)
        try:
            self._queue.put_nowait(None)  # the sender thread ends (it is a daemon thread if it cannot)
        except queue.Full:
            pass
        self._conn.close()
        self._proc.join(timeout=ABORT_WAIT_S)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)


def end_workers() -> None:
    """Abort every recorder worker of this process that is still open (a run that stops on an error
    it did not expect): none is left running, nor waited for forever at the interpreter's exit."""
    for rec in list(_LIVE):
        rec.abort()


# A backstop for a caller that never reaches the run's own cleanup: atexit runs this before
# multiprocessing's exit handler (registered earlier), which would send the workers a SIGTERM they
# ignore and then wait for them forever.
atexit.register(end_workers)


def forget_inherited() -> None:
    """In a forked child (a recorder worker, a series worker): close the parent's ends of its recorders'
    pipes, which the fork copied, and forget them (they are the parent's to close and wait for)."""
    for other in list(_LIVE):
        other._conn.close()
    _LIVE.clear()


def _recorder_worker(conn, parent_end, args, kwargs) -> None:
    import signal
    import traceback

    # The fork copied the parent's ends of this pipe and of every other recorder's: close them, or a
    # worker never sees the end of file when the parent dies (it would hold the other end itself) and
    # blocks forever on a send nobody reads (found: a killed job's worker alive minutes later).
    parent_end.close()
    forget_inherited()

    # SIGINT / SIGTERM (also when sent to the whole process group) are the parent's: it closes us
    # cleanly and we write the series. The parent blocked them around the fork; ignore, then unblock.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signals.reset()  # a signal the parent had noted before the fork is the parent's, not ours
    torch.set_num_threads(1)
    try:
        logger = kwargs.get("logger")
        if writes_concurrently(logger):
            kwargs["logger"] = fresh_copy(logger)  # its own writer (event file), not the parent's
        else:
            kwargs["defer_logging"] = True  # the parent logs the rows through its one writer
        preload = kwargs.pop("preload", None)
        rec = SeriesRecorder(*args, **kwargs)
        if preload is not None:
            rec.record_many(*preload)
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the parent went away or aborted us: keep what was recorded
                rec.close(lines=False)  # the series did not end
                return
            if msg[0] == "block":
                _, ms, ts, steps, thetas = msg
                rec.record_many(ms, ts, torch.from_numpy(thetas), steps)
            else:
                arrays = rec.close(msg[1], msg[2])
                conn.send((_DONE, (arrays, rec.deferred_rows)))
                return
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises it
        # a full disk is no bug: its one line (the file, the reason), not a traceback
        conn.send((_FAILED, f"{err}" if out_of_room(err) else traceback.format_exc()))


def _on_its_line(payload: str) -> str:
    """A worker's failure after the message's colon: a traceback on lines of its own, one line inline."""
    return f"\n{payload}" if "\n" in payload.strip() else f" {payload}"


def open_recorder(*args, worker: bool = False, preload=None, **kwargs):
    """A SeriesRecorder (same arguments), in a worker process when ``worker`` and fork is available.
    ``preload`` = (ms, ts, thetas (K, ...)): grid points to record first (handed to a worker by the fork)."""
    if worker and "fork" in multiprocessing.get_all_start_methods():
        return _ProcessRecorder(*args, preload=preload, **kwargs)
    rec = SeriesRecorder(*args, **kwargs)
    if preload is not None:
        rec.record_many(*preload)
    return rec
