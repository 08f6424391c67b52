"""The joblib launcher's keys (``hydra/launcher=joblib``), checked before the sweep starts: joblib raises
for a bad one only once the sweep has started (a trace, the sweep directory left with Hydra's
``multirun.yaml`` alone).

Hydra's joblib launcher (hydra-joblib-launcher 1.2) sets ``backend=loky`` itself before it calls joblib
("the threading backend is incompatible with Hydra"): every job runs in a worker process of loky's,
whatever ``hydra.launcher.backend`` and ``hydra.launcher.prefer`` say, and its console lines are tagged
``[job <num>]`` (``dlnlab/lab/_job_output.py``). Those two keys are taken, and :func:`launcher_note`
says at the sweep's start that they are not used; ``require=sharedmem``, joblib's demand for threads
sharing one process, cannot be met by loky's processes: refused (:func:`check_launcher`).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dlnlab.lab.config._errors import ConfigError, shown
from dlnlab.lab.config._schema import describe_omegaconf_error

__all__ = ["check_launcher", "launcher_note", "JOBLIB_LAUNCHER"]

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
_HINTS = ("processes", "threads")  # joblib's backend hints (prefer); None: none


def _value(launcher: DictConfig, key: str):
    """``hydra.launcher.<key>`` (an interpolation resolved), a failure to resolve it named by the key."""
    try:
        return launcher[key]
    except OmegaConfBaseException as err:
        raise ConfigError(
            f"hydra.launcher.{key}: {describe_omegaconf_error(err).split(': ', 1)[-1]}"
        ) from err


def check_launcher(cfg: DictConfig) -> None:
    """The joblib launcher's ``n_jobs``: joblib takes a positive count or a negative one (-1 every core,
    -2 all but one, ...) and raises for 0 or a non-integer; ``prefer``: a hint joblib knows; ``require``:
    none (``sharedmem`` asks for threads, which this launcher never runs)."""
    launcher = cfg.hydra.get("launcher")
    if launcher is None or "n_jobs" not in launcher:
        return
    n_jobs = _value(launcher, "n_jobs")
    if not (n_jobs is None or (isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and n_jobs != 0)):
        raise ConfigError(
            f"hydra.launcher.n_jobs: {shown(str(n_jobs))!r} is not a number of processes; allowed: a positive "
            "integer (that many jobs at once) or a negative one (-1: every core, -2: all but one, ...)"
        )
    if launcher.get("_target_") != JOBLIB_LAUNCHER:
        return
    prefer = _value(launcher, "prefer") if "prefer" in launcher else None
    if prefer is not None and prefer not in _HINTS:
        raise ConfigError(
            f"hydra.launcher.prefer: {shown(str(prefer))!r} is not a joblib backend hint; allowed: "
            f"{', '.join(_HINTS)}, null"
        )
    require = _value(launcher, "require") if "require" in launcher else None
    if require is not None:
        why = (
            "asks for the jobs as threads sharing one process, and Hydra's joblib launcher runs each in a "
            "process of loky's (jobs as threads would share one stdout, untagged, and Hydra's per-job state)"
            if require == "sharedmem"
            else "is not a joblib backend constraint"
        )
        raise ConfigError(f"hydra.launcher.require: {shown(str(require))!r} {why}; allowed: null")


def launcher_note(launcher: DictConfig | None) -> str | None:
    """The note a sweep prints at its start when ``hydra.launcher`` is the joblib launcher's with a
    ``backend`` or ``prefer`` it does not use, or None."""
    if launcher is None or launcher.get("_target_") != JOBLIB_LAUNCHER:
        return None
    unused = []
    backend = OmegaConf.select(launcher, "backend", default=None)
    if backend is not None and backend != "loky":
        unused.append(f"hydra.launcher.backend={backend}")
    if OmegaConf.select(launcher, "prefer", default=None) == "threads":
        unused.append("hydra.launcher.prefer=threads")
    if not unused:
        return None
    return (
        f"note: {' and '.join(unused)}: not used: Hydra's joblib launcher runs every job in a process of "
        "loky's whatever these say (it sets backend=loky itself: threads do not work with Hydra); each "
        "job's lines are tagged [job <num>]"
    )
