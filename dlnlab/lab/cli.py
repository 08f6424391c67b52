"""The command line around ``run(cfg)``: refusals exit 2 on one line, before Hydra touches the disk.

``scripts/train.py`` is a thin ``@hydra.main`` whose task calls :func:`job`; its ``__main__`` calls
:func:`main`, which first runs :func:`preflight`: it parses and composes the command line the way
Hydra will (every job of a sweep), checks each job's config with :func:`dlnlab.lab.prepare.prepare`
and refuses an output directory that already holds something or cannot be made. Only then does
Hydra run, so a refused run writes nothing (Hydra would otherwise write ``.hydra/`` first) and
Hydra's own errors (an unknown key or option, a malformed override, an override without a key, a
config group given a number) also exit 2 with one line instead of exit 1 with a trace.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dlnlab.lab import schema, signals, sweep
from dlnlab.lab.errors import ConfigError, ExitCode
from dlnlab.lab.schema import describe_omegaconf_error, unknown_key_message

__all__ = ["main", "job", "preflight", "describe_hydra_error", "MAX_PREFLIGHT_JOBS"]

MAX_PREFLIGHT_JOBS = 1000  # a sweep larger than this has its first 1000 jobs checked up front

_RESULT: dict[str, int] = {}


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def describe_hydra_error(err: BaseException) -> str:
    """One line for an error Hydra raises while parsing or composing the command line."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException, ValidationError

    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    if isinstance(err, OverrideParseException):
        return f"malformed override {err.override!r}: {first} (Hydra's override grammar: key=value)"
    if isinstance(err, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^']+)'", text)
        opts = re.findall(r"^\t(\S+)$", text.split("Available options in", 1)[-1], re.M) if m else []
        if m and opts:
            return f"{m.group(1)}={m.group(2)}: no such option; allowed: {', '.join(opts)}"
        return first
    cause = err.__cause__
    m = re.search(
        r"^In '([^']+)': \w+ raised while composing config:\nKey '[^']+' not in '(\w+)'", text, re.M
    )
    key = re.search(r"full_key: (\S+)", text)
    if m and key:  # a config file (an experiment, say) sets a key the chosen option does not have
        allowed = _fields(getattr(schema, m.group(2), None))
        msg = unknown_key_message(key.group(1), allowed) if allowed else f"{key.group(1)}: no such key"
        return f"{msg} (set in {m.group(1)}.yaml)"
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


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    for o in parsed:
        if not o.key_or_group:  # '=', '=x', '+=1', '~': Hydra would say "Could not override ''"
            raise ConfigError(
                f"{o.input_line!r}: the override has no key; an override is key=value (e.g. seed=1), "
                "+key=value to add a key, ~key to delete one"
            )
    if not multirun:
        return [overrides]
    try:
        return BasicSweeper.split_arguments(parsed, None)[0] or [[]]
    except Exception:  # noqa: BLE001 - a sweep syntax only another sweeper knows: check the base config
        return [[o.input_line for o in parsed if not o.is_sweep_override()]]


def _check_group_values(overrides: list[str]) -> None:
    """A config group takes the name of an option (or a list of names): Hydra raises a bare
    ValueError (a trace, exit 1) for ``logger=5`` or ``logger=null``."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override() or not loader.repository.group_exists(o.key_or_group):
            continue
        value = o.value()
        names = value if isinstance(value, list) else [value]
        if isinstance(value, dict) or (o.is_delete() and value is None):
            continue
        if names and all(isinstance(v, str) for v in names):
            continue
        options = ", ".join(loader.get_group_options(o.key_or_group))
        raise ConfigError(
            f"{o.key_or_group}: expected the name of an option, got {o.get_value_element_as_str()}; "
            f"allowed: {options} (e.g. {o.key_or_group}={options.split(',')[0]})"
        )


_UNIQUE = re.compile(r"\$\{dlnlab_unique:(.*)\}", re.S)


def _check_creatable(path: Path, key: str, *, claimed: bool = False) -> None:
    """Hydra makes ``path`` and its parents (``claimed``: the resolver makes ``path`` or a sibling
    ``path_1``, ...): the nearest existing one must be a directory we can write in. A probe
    directory made and removed there answers what permissions cannot (root in /proc, a full or
    read-only disk); nothing is left behind."""
    import tempfile

    path = path.absolute()
    anc = path.parent if claimed else path
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    verb = "cannot be written" if anc == path else "cannot be created"
    hint = f"choose a {key} in a writable directory (or leave it out for a fresh one under outputs/)"
    if not anc.is_dir():
        raise ConfigError(f"{key}: {path} {verb}: {anc} is not a directory; {hint}")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {path} {verb}: {anc} is not writable; {hint}")
    try:
        with signals.deferred():
            os.rmdir(tempfile.mkdtemp(prefix=".dlnlab-probe-", dir=anc))
    except OSError as err:
        raise ConfigError(
            f"{key}: {path} {verb}: no directory can be made in {anc} ({err.strerror}); {hint}"
        ) from err


def _check_output_dir(cfg: DictConfig, multirun: bool) -> None:
    """hydra.run.dir (or hydra.sweep.dir) must be creatable, and new or empty: never another run's."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    node = cfg.hydra.sweep if multirun else cfg.hydra.run
    raw = str(OmegaConf.to_container(node, resolve=False)["dir"]).strip()
    unique = _UNIQUE.fullmatch(raw)
    if unique:  # claimed fresh by the resolver
        base = OmegaConf.create({"base": unique.group(1)}, parent=node).base
        _check_creatable(Path(str(base)), key, claimed=True)
        return
    if "dlnlab_unique" in raw:
        return
    path = Path(str(node.dir))
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(
            f"{key}: {path} already exists and is not empty; a run never writes into another's "
            f"directory: choose a new {key} (or leave it out for a fresh one under outputs/)"
        )
    _check_creatable(path, key)


def preflight(argv: list[str], conf_dir: Path, config_name: str = "train") -> str | None:
    """Check the command line as Hydra will run it; the one-line reason for a refusal, or None."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dlnlab.lab.prepare import prepare

    args = get_args_parser().parse_args(argv)  # bad flags: argparse's usage and exit 2
    if _is_informational(args) or args.config_path or args.experimental_rerun:
        return None
    conf_dir = Path(args.config_dir or conf_dir).resolve()
    config_name = args.config_name or config_name
    try:
        jobs = _jobs(list(args.overrides), args.multirun)
    except HydraException as err:
        return describe_hydra_error(err)
    except ConfigError as err:
        return str(err)
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        for num, overrides in enumerate(jobs[:MAX_PREFLIGHT_JOBS]):
            where = f"job {num} ({' '.join(overrides)}): " if args.multirun and len(jobs) > 1 else ""
            try:
                _check_group_values(overrides)
                cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
                if num == 0:
                    _check_output_dir(cfg, args.multirun)
                with open_dict(cfg):
                    del cfg["hydra"]
                prepare(cfg)
            except (HydraException, OmegaConfBaseException) as err:
                return where + describe_hydra_error(err)
            except ConfigError as err:
                return where + str(err)
    return None


def job(cfg: DictConfig) -> int:
    """The body of the ``@hydra.main`` task: run, report, and return the exit code.

    In a multirun a failure of this job is recorded (``job.json``) and the sweep goes on; a signal
    stops the sweep.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dlnlab.lab.experiment import run

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    message = ""
    stopped = sweep.interrupted_by(HydraConfig.get().sweep.dir) if multirun else None
    if stopped is not None:  # the sweep was interrupted before this job could start: it does not run
        code = 128 + int(signal.Signals[stopped])
        sweep.JOB.update(exit_code=code, message=f"not run: the sweep was interrupted ({stopped})")
        _RESULT["job"] = code
        return code
    try:
        code = run(cfg).exit_code
    except ConfigError as err:
        message = str(err)
        print(f"error: {message}", file=sys.stderr)
        code = int(ExitCode.CONFIG)
    except KeyboardInterrupt:
        code = signals.exit_code()
    except Exception as err:  # a bug: the trace is for the report; a sweep still goes on
        if not multirun:
            raise
        traceback.print_exc()
        message, code = f"{type(err).__name__}: {err}", int(ExitCode.CRASHED)
    _RESULT["job"] = code
    sweep.JOB.update(exit_code=code, message=message)
    if multirun and code in (ExitCode.SIGINT, ExitCode.SIGTERM):
        hc = HydraConfig.get()
        sweep.write_job_record(
            Path(hc.runtime.output_dir), int(hc.job.num), list(hc.overrides.task), code, "interrupted"
        )
        if sweep.LAST.get("config") is not None:  # the sweep's own process (basic launcher): stop it
            raise signals.Interrupted(code - 128)  # Hydra runs no further job
    return code


def resume_command(args) -> int | None:
    """``resume=<run dir>``: finish that run with its own config, without Hydra (which would write a
    new ``.hydra/``); None when the command line is not a resume."""
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
    from dlnlab.lab.experiment import resume

    try:
        return resume(resumes[0].split("=", 1)[1]).exit_code
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return int(ExitCode.CONFIG)


def main(hydra_main: Callable[[], None], conf_dir: Path, config_name: str = "train", argv=None) -> int:
    """Preflight, then Hydra (``hydra_main`` is the decorated task); returns the exit code."""
    from hydra._internal.utils import get_args_parser

    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args_parser().parse_args(argv)
    multirun = bool(args.multirun)
    signals.install()
    try:
        return _main(hydra_main, conf_dir, config_name, argv, args, multirun)
    finally:  # the process exits now, everything written: a late signal must not kill it (README)
        signals.ignore_until_exit()


def _main(hydra_main, conf_dir: Path, config_name: str, argv, args, multirun: bool) -> int:
    if not _is_informational(args):
        try:
            code = resume_command(args)
        except KeyboardInterrupt:
            code = signals.exit_code()
        if code is not None:
            return code
    try:
        reason = preflight(argv, conf_dir, config_name)
        if reason is not None:
            print(f"error: {reason}", file=sys.stderr)
            return int(ExitCode.CONFIG)
        _RESULT.clear()
        sweep.LAST.clear()
        if multirun:  # a signal is handed on to the sweep's running jobs before the launcher sees it
            signals.on_first_signal(sweep.hand_on)
        hydra_main()
    except KeyboardInterrupt:
        if multirun and sweep.LAST.get("dir"):
            sweep.wait_for_children()
            sweep.write_sweep_summary(Path(sweep.LAST["dir"]))
        code = signals.exit_code()
        print(f"interrupted (exit code {code}): every file written so far is complete", file=sys.stderr)
        return code
    if multirun:
        return int(sweep.LAST.get("exit_code", 0))
    return int(_RESULT.get("job", 0))
