"""The command line's config from Python: ``conf/train.yaml`` composed by Hydra with a list of
overrides, as ``python scripts/train.py *overrides`` composes it, and checked by the lab."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dlnlab.lab.config import ConfigError
from dlnlab.lab.script_args import checked_config


def compose(overrides: Sequence[str] = (), conf_dir: str | Path | None = None):
    """The config of ``python scripts/train.py *overrides`` (a DictConfig for :func:`dlnlab.lab.run`),
    composed by Hydra's compose API from ``conf_dir`` (default: the checkout's ``conf/``, next to the
    package of an editable install) and checked by :func:`dlnlab.lab.prepare`.

    ``overrides`` are the command line's words: ``["experiment=tiny", "sgd.lrs=[0.04,0.02]"]``. A bad
    one raises :class:`dlnlab.lab.ConfigError` with the command line's one-line refusal; Hydra's own
    keys (``hydra.*``) and ``resume`` are refused (``run(cfg, output_dir=...)`` says where a run goes).
    """
    if isinstance(overrides, (str, bytes)):
        raise ConfigError(f"overrides: a list of the command line's words, e.g. [{overrides!r}]; got a str")
    words = [str(o) for o in overrides]
    for word in words:
        key = word.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0].split("/")[0] in ("hydra", "resume"):
            raise ConfigError(
                f"{key}: not a key of a run from Python: run(cfg, output_dir=...) says where it goes, "
                "resume(run_dir) finishes one; any key but hydra.* and resume is allowed"
            )
    if conf_dir is None:
        conf_dir = Path(__file__).resolve().parents[2] / "conf"
        if not (conf_dir / "train.yaml").is_file():
            raise ConfigError(
                f"conf_dir: no conf/train.yaml next to the package ({conf_dir}): dlnlab is installed without "
                "its checkout; give conf_dir=<the checkout's conf/>"
            )
    elif not (Path(conf_dir) / "train.yaml").is_file():
        raise ConfigError(f"conf_dir: {str(conf_dir)!r} holds no train.yaml; give the checkout's conf/")
    cfg, why = checked_config(Path(conf_dir).resolve(), words)
    if cfg is None:
        raise ConfigError(why)
    return cfg
