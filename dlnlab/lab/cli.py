"""The command line around ``run(cfg)``: refusals exit 2 on one line, before Hydra touches the disk.

``scripts/train.py`` is a thin ``@hydra.main`` whose task calls :func:`job`; its ``__main__`` calls
:func:`main`, which first runs :func:`preflight`: it composes the command line as Hydra will (every
job of a sweep), checks each job's config with :func:`dlnlab.lab.config.prepare` and refuses an output
directory that holds something or cannot be made. Only then does Hydra run: a refused run writes
nothing, and Hydra's own errors (an unknown key or option, a malformed override) exit 2 in one line.
"""

from __future__ import annotations

import shlex
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, open_dict

from dlnlab.lab import _hydra, sweep
from dlnlab.lab._overrides import check_group_values, override_jobs
from dlnlab.lab.config import (
    ConfigError,
    ExitCode,
    WriteFailed,
    check_expansion,
    check_job_dirs,
    check_override_text,
    check_relative_paths,
    config_class,
    describe_omegaconf_error,
    describe_yaml_error,
    key_in_file_message,
    output_dir,
    prepare,
    shown,
)
from dlnlab.rundir import signals

__all__ = ["main", "job", "preflight", "parse_args", "describe_hydra_error", "MAX_PREFLIGHT_JOBS"]

MAX_PREFLIGHT_JOBS = 100  # a sweep's jobs checked up front (0.1-0.4 s each; each job's start checks it again)


_AMBIGUOUS = "Ambiguous value for argument "  # Hydra's ConfigCompositionException for key=a,b


def describe_hydra_error(err: BaseException) -> str:
    """One line for an error Hydra raises while parsing or composing the command line."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException, ValidationError

    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    if isinstance(err, OverrideParseException):  # the override twice: shortened where it is long
        return (
            f"malformed override {shown(err.override, 120)!r}: {shown(first, 240)} (Hydra's override grammar: "
            "key=value; quote a value with special characters: key='...')"
        )
    if first.startswith(_AMBIGUOUS) and "=" in first:  # key=a,b without -m: Hydra's three-line advice
        key, _, value = first[len(_AMBIGUOUS) :].strip("'").partition("=")
        return f"{key}: {value!r} holds commas: a list is {key}=[{value}]; to sweep over the values, add -m"
    if isinstance(err, MissingConfigException):
        missing = _hydra.missing_option(text)
        if missing is not None:
            group, option, options = missing
            return f"{group}={option}: no such option; allowed: {', '.join(options)}"
        return first
    cause = err.__cause__
    found = _hydra.unknown_key_in_file(text)
    if found is not None:  # a config file (an experiment, say) sets a key the chosen option does not have
        where, node, key = found
        return key_in_file_message(where, config_class(node), key)
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        key = cause.full_key
        msg = str(cause.msg)
        if "is not a ListConfig" in msg:
            return f"{key}: expected a list, e.g. {key}=[...]"
        if "is not a subclass of" in msg and "." not in key:
            return f"{key}: is a group of keys, not an option; set one of its keys, e.g. {key}.<key>=..."
    if isinstance(cause, OmegaConfBaseException):
        return describe_omegaconf_error(cause)
    return first


def _is_informational(args) -> bool:
    return bool(args.help or args.hydra_help or args.info or args.cfg or args.shell_completion)


def preflight(argv: list[str], conf_dir: Path, config_name: str = "train", claim: bool = False) -> str | None:
    """Check the command line as Hydra will run it; the one-line reason for a refusal, or None.

    ``claim``: a single run's explicit ``hydra.run.dir``, or a sweep's ``hydra.sweep.dir``, that passed
    is claimed for this process (:func:`dlnlab.lab.runner.claim_run_dir`: made, locked, checked empty)
    before Hydra writes in it; the sweep's is held to the end of the command line.

    ``--cfg``, ``--info`` and ``--help`` print the composed config: their overrides are parsed and
    composed here too (Hydra's own errors in one line), without the run's checks."""
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        args = parse_args(argv)
    except ConfigError as err:
        return str(err)
    composes = bool(args.cfg or args.info or args.help)
    if args.experimental_rerun:
        return (
            "--experimental-rerun: not supported here: it unpickles a saved config and reruns it into the old "
            "run's directory, past every check; rerun with the run's overrides (<run>/.hydra/overrides.yaml) "
            "or finish it with resume=<run dir>"
        )
    if _is_informational(args) and not composes:
        return None
    if args.config_path:  # as Hydra takes it: absolute, or relative to the script's directory
        conf_dir = Path(sys.argv[0]).resolve().parent / args.config_path
        if not conf_dir.is_dir():
            return f"--config-path: {conf_dir} is not a directory of config files"
    conf_dir = conf_dir.resolve()
    searchpath: list[str] = []
    if args.config_dir:  # Hydra adds it to the search path; the primary config stays where it is
        added = Path(args.config_dir).absolute()
        if not added.is_dir():
            return f"--config-dir: {added} is not a directory of config files"
        searchpath = [f"hydra.searchpath=['file://{added}']"]
    try:
        check_expansion([conf_dir, *([Path(args.config_dir).absolute()] if args.config_dir else [])])
    except ConfigError as err:
        return str(err)
    config_name = args.config_name or config_name
    try:
        check_override_text(list(args.overrides), conf_dir)
        jobs = override_jobs(list(args.overrides), args.multirun)
    except HydraException as err:
        return describe_hydra_error(err)
    except ConfigError as err:
        return str(err)
    subdirs, named = {}, args.multirun and len(jobs) > 1  # each sweep job's directory: the job that has it
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        for num, overrides in enumerate(jobs[:MAX_PREFLIGHT_JOBS]):
            where = f"job {num} ({shown(' '.join(overrides), 200)}): " if named else ""
            checks = not composes
            reason = _check_job(
                config_name, overrides, num, args.multirun, checks, searchpath, subdirs, claim and checks
            )
            if reason is not None:
                return where + reason
    return None


def _start_early(plan) -> None:
    from dlnlab.lab.runner import start_early  # torch and the runner: for a config that has passed

    start_early(plan)


def _check_job(
    config_name: str,
    overrides: list[str],
    num: int,
    multirun: bool,
    run_checks: bool,
    searchpath: list[str],
    subdirs: dict[str, int],
    claim: bool = False,
) -> str | None:
    """One job of the command line: composed as Hydra will (``searchpath``: the override that adds
    --config-dir), then (``run_checks``) its output directory and the run's own checks
    (:func:`dlnlab.lab.config.prepare`); ``claim``: a single run's or a sweep's explicit directory is
    claimed last (a sweep's with its job 0; a later job refused lets it go, :func:`release_claims`)."""
    import yaml
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        check_group_values(overrides)
        # Held to the composition's end: raised inside Hydra's config loading, a signal's exception can
        # come out as another error (its file source closes a file it never opened: UnboundLocalError) or
        # as a refusal ("defaults: no such key"), found by signalling the CLI 0.5 s after its start.
        with signals.deferred():
            cfg = compose(
                config_name=config_name, overrides=[*overrides, *searchpath], return_hydra_config=True
            )
        if not run_checks:
            return None
        check_job_dirs(cfg, num, multirun, subdirs)
        key, out, unique = output_dir(cfg, multirun) if claim and num == 0 else ("", None, True)
        chdir = bool(cfg.hydra.job.get("chdir"))
        with open_dict(cfg):
            del cfg["hydra"]
        # a single run's flow solve starts inside (before_targets)
        plan = prepare(cfg, before_targets=None if multirun else _start_early)
        check_relative_paths(cfg, chdir)
        if not unique:  # a given directory (dlnlab_unique's is claimed by its own mkdir)
            from dlnlab.lab.runner import claim_run_dir

            claim_run_dir(out, key)
        if not multirun:  # passed: the run takes this plan rather than building it again
            from dlnlab.lab.runner import keep_plan

            keep_plan(plan)
    except (HydraException, OmegaConfBaseException) as err:
        return describe_hydra_error(err)
    except ConfigError as err:
        return str(err)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        return describe_yaml_error(err)
    return None


def job(cfg: DictConfig) -> int:
    """The body of the ``@hydra.main`` task: run, report, and return the exit code.

    In a multirun a failure of this job is recorded (``job.json``) and the sweep goes on; a signal
    stops the sweep.
    """
    _release_hydra_hold()  # Hydra has composed this job's config: a signal reaches the run again
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dlnlab.lab.runner import run

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    message = ""
    stopped = sweep.interrupted_by(HydraConfig.get().sweep.dir) if multirun else None
    if stopped is not None:  # the sweep was interrupted before this job could start: it does not run
        code = 128 + int(signal.Signals[stopped])
        sweep.OUTCOME.job(code, f"not run: the sweep was interrupted ({stopped})")
        return code
    try:
        code = run(cfg).exit_code
    except ConfigError as err:
        message = str(err)
        print(f"error: {message}", file=sys.stderr)
        code = int(ExitCode.CONFIG)
    except WriteFailed as err:  # the disk is full (or read-only): recorded as far as it could be
        message = str(err)
        print(f"error: {message}", file=sys.stderr)
        code = int(ExitCode.WRITE_FAILED)
    except KeyboardInterrupt:
        code = signals.exit_code()
    except Exception as err:  # a bug: the trace is for the report; a sweep still goes on
        if not multirun:
            raise
        traceback.print_exc()
        message, code = f"{type(err).__name__}: {err}", int(ExitCode.CRASHED)
    sweep.OUTCOME.job(code, message)
    if multirun and code in (ExitCode.SIGINT, ExitCode.SIGTERM):
        hc = HydraConfig.get()
        sweep.write_job_record(
            Path(hc.runtime.output_dir), int(hc.job.num), list(hc.overrides.task), code, "interrupted"
        )
        if sweep.OUTCOME.sweep_config is not None:  # the sweep's own process (basic launcher): stop it
            raise signals.Interrupted(code - 128)  # Hydra runs no further job
    return code


def resume_command(args, conf_dir: Path, config_name: str = "train") -> int | None:
    """``resume=<run dir>``: finish that run with its own config, without Hydra (which would write a
    new ``.hydra/``); a sweep's job, or a whole sweep's unfinished jobs, with the sweep's records kept
    up to date (:mod:`dlnlab.lab.sweep_resume`; ``conf_dir``: the config tree of a job that never
    ran). None when the command line is not a resume."""
    resumes = [o for o in args.overrides if o.split("=", 1)[0] in ("resume", "+resume")]
    if not resumes:
        return None
    others = [o for o in args.overrides if o not in resumes]
    if others or args.multirun or len(resumes) > 1:
        print(
            "error: resume: a resumed run takes its config from its own summary.json; give resume=<run dir> "
            f"alone (got: {' '.join(args.overrides)}{' -m' if args.multirun else ''})",
            file=sys.stderr,
        )
        return int(ExitCode.CONFIG)
    from dlnlab.lab.sweep_resume import finish

    try:
        return finish(resumes[0].split("=", 1)[1], conf_dir, config_name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    except WriteFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return int(ExitCode.WRITE_FAILED)


def parse_args(argv: list[str]):
    """Hydra's own parser of the command line, its errors in one line (argparse would print its usage,
    eight lines, before the error)."""
    parser = _hydra.args_parser()

    def error(message: str):
        hint = "Hydra's flags come before the overrides: train.py [--cfg job] [-m] key=value ...; "
        raise ConfigError(
            f"{message} ({hint if 'unrecognized' in message else ''}train.py --help lists the flags)"
        )

    parser.error = error
    return parser.parse_args(argv)


def main(hydra_main: Callable[[], None], conf_dir: Path, config_name: str = "train", argv=None) -> int:
    """Preflight, then Hydra (``hydra_main`` is the decorated task); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    multirun = bool(args.multirun)
    signals.install()
    try:
        return _main(hydra_main, conf_dir, config_name, argv, args, multirun)
    finally:  # the process exits now, everything written: a late signal must not kill it (README)
        signals.ignore_until_exit()
        from dlnlab.lab.runner import release_claims

        release_claims()  # a run directory claimed by the preflight that no run took (Hydra failed first)


def _main(hydra_main, conf_dir: Path, config_name: str, argv, args, multirun: bool) -> int:
    if not _is_informational(args):
        try:
            code = resume_command(args, conf_dir, config_name)
        except KeyboardInterrupt:
            code = signals.exit_code()
        if code is not None:
            return code
    try:
        try:
            reason = preflight(argv, conf_dir, config_name, claim=True)
        finally:  # a signal that came during the checks stops the run, whatever they found or raised
            signals.check()
        if reason is not None:
            print(f"error: {reason}", file=sys.stderr)
            return int(ExitCode.CONFIG)
        sweep.OUTCOME.clear()
        if multirun:  # a signal is handed on to the sweep's running jobs before the launcher sees it
            signals.on_first_signal(sweep.hand_on)
        _hydra_main(hydra_main, multirun)
    except KeyboardInterrupt:
        finish = ""
        if multirun and sweep.OUTCOME.sweep_dir:
            sweep.wait_for_children()
            sweep.write_sweep_summary(Path(sweep.OUTCOME.sweep_dir))
            # the next step as a command to copy, as a single run's last line gives it
            finish = f"; python scripts/train.py resume={shlex.quote(str(sweep.OUTCOME.sweep_dir))} finishes the sweep"
        code = signals.exit_code()
        print(
            f"interrupted (exit code {code}): every file written so far is complete{finish}", file=sys.stderr
        )
        return code
    if multirun:
        return int(sweep.OUTCOME.sweep_code or 0)
    return int(sweep.OUTCOME.job_code or 0)


# Hydra composes the job's config again before it calls the task, and turns an error there into its
# message, a trace and ``sys.exit(1)``. Raised inside that code, a signal's exception can come out as such
# an error (measured: OmegaConf's "'NoneType' object has no attribute '_invalidate_flags_cache'"). A single
# run therefore holds signals from the call into Hydra to the task's start: the handler runs at once, the
# exception comes where the task starts. A sweep holds none: its launcher (joblib, ...) waits for jobs in
# other processes, and its signal must stop that wait (the handler hands it on); a signal inside its
# compositions still ends it as the signal (below), Hydra's message printed before.
_HYDRA_HOLD = {"held": False}


def _release_hydra_hold() -> None:
    if _HYDRA_HOLD["held"]:
        _HYDRA_HOLD["held"] = False
        signals.release()


def _hydra_main(hydra_main, multirun: bool) -> None:
    if not multirun:
        signals.hold()
        _HYDRA_HOLD["held"] = True
    try:
        hydra_main()
    except SystemExit:  # --help, --cfg, or Hydra's own error: a signal meanwhile ends it as the signal
        signals.check()
        raise
    finally:
        _release_hydra_hold()
