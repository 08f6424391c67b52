"""Run the lab: the exact gradient flow and one (S)GD series per learning rate.

    python scripts/train.py                                   # the Figure 1 setting
    python scripts/train.py model.dims=[11,6,6,6,6,4] init.scale=0.1 sgd.lrs=[0.01,0.005,0.0025]
    python scripts/train.py experiment=tiny hydra.run.dir=/tmp/run
    python scripts/train.py -m seed=0,1,2                    # a sweep (sweep_summary.json at the end)

Exit codes: 0 ok (diverged / unstable series are a scientific outcome), 1 the lab crashed (a bug;
summary.json says where), 2 refused before any work (bad config, impossible size, bad file), 3 a series
failed (the others were run), 4 the disk took no more writes (make room, then resume=<run dir>), 130
SIGINT, 143 SIGTERM (everything recorded so far is written). A sweep exits with the largest code of its
jobs (docs/runs.md).
"""

import gc
import os
import signal
import sys


def _stopped_while_starting(signum, frame):  # before the lab's handlers: nothing is written yet
    sys.stderr.write(f"interrupted while starting ({signal.Signals(signum).name}); nothing was written\n")
    os._exit(128 + signum)


for _sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_sig, _stopped_while_starting)

from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from dlnlab.lab.cli import job, main  # noqa: E402 - also registers the schema in Hydra's ConfigStore

CONF = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def train(cfg: DictConfig) -> int:
    return job(cfg)


if __name__ == "__main__":
    code = main(train, CONF)
    # Everything is written and closed; atexit handlers still run. Frozen, the heap that torch, Lightning
    # and torch._dynamo built is left out of the interpreter's last garbage collections: the exit of the
    # default run took 1.3 s after the last atexit handler, 0.2 s frozen (docs/performance.md).
    gc.freeze()
    sys.exit(code)
