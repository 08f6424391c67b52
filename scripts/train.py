"""Run the lab: the exact gradient flow and one (S)GD series per learning rate.

    python scripts/train.py                                   # the Figure 1 setting
    python scripts/train.py model.dims=[11,6,6,6,6,4] init.scale=0.1 sgd.lrs=[0.01,0.005,0.0025]
    python scripts/train.py experiment=tiny hydra.run.dir=/tmp/run

Exit codes: 0 ok (diverged/unstable series are a scientific outcome), 2 bad configuration,
3 a series failed (flow solver failure or error), 130 interrupted.
"""

import sys

import hydra
from omegaconf import DictConfig

from dlnlab.lab.config import ConfigError
from dlnlab.lab.experiment import EXIT_CONFIG, EXIT_INTERRUPTED, run


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> int:
    try:
        result = run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except KeyboardInterrupt:  # outside the series (which record it themselves)
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    if result.exit_code:
        sys.exit(result.exit_code)
    return 0


if __name__ == "__main__":
    main()
