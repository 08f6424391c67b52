"""The lab's main job as plain functions: ``run(cfg)`` and ``resume(run_dir)``.

config -> :func:`dlnlab.lab.config.prepare` (every refusal, before anything is written) -> the series,
kind after kind (the flow, then one series of each other kind per learning rate:
:mod:`dlnlab.lab.runner._series`) -> saddle analysis -> figures -> the loggers. ``summary.json``
is written at the start and when each stage starts, atomically, so a failure or a signal at any
moment leaves every finished file readable and a summary that says where the run stopped.
``scripts/train.py`` is a thin ``@hydra.main`` around :func:`run`; tests call :func:`run` directly.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlnlab.errors import AnalysisWarning, ConfigWarning
from dlnlab.lab._console import say
from dlnlab.lab.config import (
    ConfigError,
    Plan,
    WriteFailed,
    check_run_dir,
    console_warnings,
    current_targets,
    prepare,
    resume_shell_command,
    to_plain,
)
from dlnlab.lab.results import (
    RunResult,
    RunState,
    Summary,
    end_block,
    results_block,
    resume_line,
    start_block,
)
from dlnlab.lab.runner._ahead import FlowAhead, claim, take_plan, worth_it
from dlnlab.lab.runner._lock import LOCK_NAME, RunLock, take_claim
from dlnlab.lab.runner._progress import Progress
from dlnlab.lab.runner._resume import Previous, ResumeRefused, check_problem, check_series, load_previous
from dlnlab.lab.runner._resume_config import check_config
from dlnlab.lab.runner._times import SeriesTimes
from dlnlab.rundir import out_of_room, problem_arrays, series_name, signals, write_bytes, write_problem

if TYPE_CHECKING:  # the series (and Lightning) are imported once the config has passed
    from dlnlab.lab.runner._context import SeriesContext

__all__ = ["run", "resume", "RunResult", "series_name"]


def _output_dir(output_dir) -> Path:
    if output_dir is not None:
        return Path(output_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception as err:  # noqa: BLE001 - Hydra not running
        raise ConfigError("run(cfg): pass output_dir when not running under Hydra") from err


def run(cfg: Any, output_dir: str | Path | None = None) -> RunResult:
    """Run the flow and one (S)GD series per learning rate; write the run directory; return the summary.

    ``cfg``: a Hydra DictConfig, a plain nested dict or a :class:`~dlnlab.lab.config.TrainConfig`.
    ``output_dir`` defaults to Hydra's output directory. Every bad value raises :class:`ConfigError`
    before anything is written. SIGINT and SIGTERM end the run with what is recorded written (exit
    code 130 or 143 in the result); :func:`resume` finishes it. The run holds the directory's lock
    (:mod:`dlnlab.lab.runner._lock`) while it works.
    """
    plan = take_plan(cfg) or prepare(cfg)  # the command line's preflight built it already
    callbacks = user_callbacks(plan)
    out = _output_dir(output_dir)
    key = "hydra.run.dir" if output_dir is None else "output_dir"  # as the caller gave it
    lock = take_claim(out)  # the command line claimed the directory before Hydra wrote in it
    if lock is None:
        check_run_dir(out, key=key)  # refused untouched, no lock file left in another's directory
        lock = RunLock.acquire(out, key)
    try:
        check_run_dir(
            out, also=(LOCK_NAME,), key=key
        )  # again, locked: no run can have started there meanwhile
        return _guarded(plan, out, None, callbacks)
    finally:
        lock.release()


def user_callbacks(plan: Plan) -> list:
    """The user's callbacks, made before any work: one that cannot be made is refused (ConfigError
    naming its key) rather than failing the run once it has started."""
    from hydra.utils import instantiate

    made = []
    for name, node in plan.cfg.callbacks.items():
        try:
            made.append(instantiate(node))
        except Exception as err:  # noqa: BLE001 - the user's code: any error is a refusal
            cause = err.__cause__ or err  # Hydra wraps what the constructor raised
            raise ConfigError(
                f"callbacks.{name}: {node.get('_target_')} cannot be made: {type(cause).__name__}: {cause}"
            ) from err
    return made


def resume(run_dir: str | Path) -> RunResult:
    """Finish the interrupted run in ``run_dir`` with the config it was started with (see
    :mod:`dlnlab.lab.runner._resume`): finished series are kept, the interrupted one continues from its
    checkpoint, the rest run; the summary records the resume. Refused (ConfigError) while another
    process works in the directory, and for the damaged or changed runs listed there."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        load_previous(run_dir)  # the one-line refusal (no directory, no summary), before any lock file
    lock = RunLock.acquire(run_dir, "resume")
    try:
        previous = load_previous(run_dir)
        try:
            plan = prepare(current_targets(previous.config))
        except ConfigError as err:
            raise ConfigError(f"resume: the config in {run_dir}/summary.json is refused: {err}") from err
        check_problem(run_dir, problem_arrays(plan.problem, plan.cfg.model.dims, plan.weights0))
        _check_series(previous, plan)
        check_config(run_dir, to_plain(plan.cfg))  # every other key that changes a series' numbers
        return _guarded(plan, run_dir, previous, user_callbacks(plan))
    finally:
        lock.release()


def _check_series(previous: Previous, plan: Plan) -> None:
    """The grid and the series the config builds are the ones the run recorded (refused otherwise)."""
    from dlnlab.lab.runner._registry import KINDS

    kinds = [kind for kind in KINDS if kind.enabled(plan)]
    names = [k.series_name(lr) for k in kinds for lr in (plan.lrs if k.per_lr else (None,))]
    grid = SeriesTimes.of(plan).grid.numpy()
    check_series(previous, grid, names, [series_name(lr) for lr in plan.lrs])


def _guarded(plan: Plan, out: Path, previous: Previous | None, callbacks: list) -> RunResult:
    main = threading.current_thread() is threading.main_thread()
    if main:
        if not signals.installed():  # else the caller's (the CLI's): a signal it got already counts
            signals.reset()
        signals.install()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the small-matrix hot loops: one thread (restored for the caller)
    try:
        with console_warnings():
            return _execute(plan, out, previous, callbacks)
    except OSError as err:  # the disk took no more writes: one line, not a bug's traceback
        if not out_of_room(err):
            raise
        raise WriteFailed(
            f"cannot write {err.filename or out}: {err.strerror}; the run stopped there, every file written "
            f"before is complete: make room on that disk (or lift the limit), then finish the run with "
            f"{resume_shell_command(out)}"
        ) from err
    finally:
        torch.set_num_threads(threads)
        if main:
            signals.uninstall()


def _execute(plan: Plan, out: Path, previous: Previous | None, callbacks: list) -> RunResult:
    state = RunState(plan, out)
    if previous is not None:
        prior = previous.summary
        state.earlier = dict(prior.get("series") or {})  # kept in summary.json until each is redone
        before = prior.get("resumed") if isinstance(prior.get("resumed"), list) else []
        state.resumed = [*before, {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "stage": prior.get("stage"), "status": prior.get("status"),
                         "interrupted": prior.get("interrupted"), "series": {}}]  # fmt: skip
    try:
        try:
            _run_all(state, previous, callbacks)
        finally:
            if state.ctx is not None:
                state.ctx.logger_failures(state.series)
    except KeyboardInterrupt:
        state.interrupted = True
    except ResumeRefused:
        with signals.deferred(raise_at_end=False):
            write_bytes(out / "summary.json", previous.raw)  # as it was: the resume did nothing
        raise
    except Exception as err:  # a bug outside any series: recorded, then raised (exit code 1)
        state.crashed(err)
        with contextlib.suppress(Exception):
            state.write_summary()
        raise
    finally:
        _end_workers()  # none is left running, whatever happened
    state.end()
    with contextlib.suppress(OSError):  # every series finished: no checkpoint is left to resume from
        (out / "checkpoints").rmdir()  # (an interrupted series' checkpoint keeps the folder)
    summary = state.write_summary()
    table = results_block(summary)
    say(table)
    if state.ctx is not None:
        try:
            from dlnlab.lab.results import log_run

            with signals.deferred(raise_at_end=False):
                if previous is not None:
                    previous.drop_closing_events()  # the earlier runs' hparams and text: logged once
                log_run(state.ctx, summary, table)
        except Exception as err:  # noqa: BLE001 - the logger must not lose the run
            state.logging_error = f"{type(err).__name__}: {err}"
            warnings.warn(
                f"logging the run's results failed: {state.logging_error}", AnalysisWarning, stacklevel=2
            )
            summary = state.write_summary()  # the files are complete; the summary says what the logger lost
    say(end_block(summary))
    return RunResult(Summary.from_dict(summary, strict=False))  # what summary.json says, typed


def _end_workers() -> None:
    record = sys.modules.get("dlnlab.lab.record._recorder")  # not imported: no worker was ever started
    if record is not None:
        record.end_workers()


def _run_all(state: RunState, previous: Previous | None, callbacks: list) -> None:
    plan, cfg = state.plan, state.plan.cfg
    for note in plan.notes:
        warnings.warn(note, ConfigWarning, stacklevel=2)
    say(start_block(plan, state.out))
    if previous is not None:
        say(resume_line(previous.summary))
    if previous is None:
        write_problem(state.out, plan.problem, plan.cfg.model.dims, plan.weights0, state.plain_config)
    times = SeriesTimes.of(plan)  # the grid t_m = m dt, m = 0..M, and each learning rate's exact times
    state.n_grid = len(times.grid)
    state.write_summary()
    # with a second core the flow is solved meanwhile, in a forked process (runner/_ahead.py)
    progress = Progress(cfg.log.progress.name)
    ahead = claim(plan, times.all_t)  # started by the command line's check, if it did
    if ahead is None and worth_it(plan):  # a run() called in a fresh process
        ahead = FlowAhead.start(plan, times.all_t)
    state.process.update(flow_ahead=ahead is not None)
    try:
        if ahead is not None:
            state.enter("flow")  # its solve has started (the series loop's enter of it is then a no-op)
        # ahead, a signal during Lightning's import is noted, not raised: the driver then records the
        # flow's rows so far (its process stopped too), as a signal during the driver's own solve would
        with signals.deferred(raise_at_end=False) if ahead is not None else contextlib.nullcontext():
            ctx, kinds = _open_series(state, callbacks, progress, ahead)
        _run_series(state, ctx, kinds, previous, times)
    finally:
        if ahead is not None:
            ahead.end()  # a signal or an error before the flow took it: the process goes too


def _open_series(state: RunState, callbacks: list, progress, ahead) -> tuple[SeriesContext, list]:
    """Lightning's import, the series' context and its loggers; the kinds of series the run has."""
    import dlnlab.lab.runner._training  # noqa: F401 - Lightning's import (~2 s) now, not in the middle of the run
    from dlnlab.lab.runner._context import SeriesContext
    from dlnlab.lab.runner._registry import KINDS
    from dlnlab.lab.runner._series import tensorboard_runs

    kinds = [kind for kind in KINDS if kind.enabled(state.plan)]
    state.ctx = ctx = SeriesContext.for_run(
        state.plan, state.out, state.n_grid, callbacks, runs=tensorboard_runs(kinds, state.plan.lrs),
        flow_ahead=ahead, progress=progress,
    )  # fmt: skip
    ctx.open_loggers()  # before any worker starts: TensorBoard colours the runs in this order
    return ctx, kinds


def _run_series(state: RunState, ctx: SeriesContext, kinds: list, previous: Previous | None, times) -> None:
    from dlnlab.lab.runner._flow_chunks import flow_workers
    from dlnlab.lab.runner._parallel import series_workers
    from dlnlab.lab.runner._series import run_series

    plan, cfg = state.plan, state.plan.cfg

    workers, why = series_workers(plan, ctx)
    ctx.flow_workers = flow_workers(plan)
    state.process.update(workers=workers, workers_why=why, flow_workers=ctx.flow_workers)
    run_series(state, ctx, previous, times, kinds, workers=workers)
    if not state.interrupted and cfg.ensemble.vary.name == "sgd":
        from dlnlab.lab.results import record_limit

        if previous is not None:
            previous.drop_limit_events()  # a killed worker's run logged them: each curve once
        record_limit(state, ctx)
    state.write_summary()
    if not state.interrupted:
        _analyse(state, ctx)
        if state.limit is not None:
            from dlnlab.lab.results import add_exit_spreads

            add_exit_spreads(state)  # needs the members' plateau exits from the analysis
    state.interrupted |= signals.received() is not None


def _analyse(state: RunState, ctx: SeriesContext) -> None:
    """Saddle analysis, then figures: a failure here is reported, never loses the run."""
    from dlnlab.lab.results import analyze_members, analyze_run_saddles, make_figures

    cfg = state.plan.cfg
    state.enter("saddle analysis")
    try:
        ctx.progress.note("saddle analysis: plateaus and their saddles ...")
        analyze = analyze_members if state.plan.seeds.members else analyze_run_saddles
        which = state.plan.analysis.saddles  # all, flow or none: within the analysis budget
        analyze(
            state.plan.problem,
            tuple(cfg.model.dims),
            state.arrays,
            state.series,
            hessian_dense_max=cfg.log.hessian_dense_max,
            classify={"all": True, "flow": {"flow"}, "none": False}[which],
        )  # fmt: skip  (the plateaus go to summary.json, and to TensorBoard's Text tab at the end)
    except Exception as err:  # noqa: BLE001 - analysis must not lose the run
        warnings.warn(f"saddle analysis failed: {type(err).__name__}: {err}", AnalysisWarning, stacklevel=2)
    state.enter("figures")
    try:
        if cfg.log.figures:
            ctx.progress.note("figures ...")
            make_figures(ctx)
    except Exception as err:  # noqa: BLE001 - figures must not lose the run
        if out_of_room(err):  # the run stops as at any write the disk refuses (exit 4); a resume draws them
            raise
        state.figures_error = f"{type(err).__name__}: {err}"
        warnings.warn(f"figures failed: {state.figures_error}", AnalysisWarning, stacklevel=2)
    signals.check()  # one noted, not raised, during the figures (another thread's): interrupted in them
    state.stage = "done"
