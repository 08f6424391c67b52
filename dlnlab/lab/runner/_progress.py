"""The run's progress bars (tqdm on stderr), apart from the series' context so that the flow's solve
ahead of Lightning's import (:mod:`dlnlab.lab.runner._ahead`) can draw its bar."""

from __future__ import annotations

import sys

__all__ = ["Progress"]


class Progress:
    """One tqdm bar per series on stderr, in units of flow time t; off unless on a terminal (``auto``)
    or ``always``."""

    FORMAT = "  {desc:<16} {percentage:5.1f}% |{bar:24}| t = {n:.4g} / {total:.4g} [{elapsed} < {remaining}]{postfix}"

    def __init__(self, mode: str = "auto", position: int | None = None) -> None:
        self.enabled = mode == "always" or (mode == "auto" and sys.stderr.isatty())
        self.position = position  # a series worker's line (tqdm's position), so that bars never overwrite
        self.bar = None

    def on_line(self, position: int) -> Progress:
        """A bar for a series worker: as this one, on line ``position`` below the cursor."""
        other = Progress("never", position)
        other.enabled = self.enabled
        return other

    def start(self, label: str, t_end: float) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(
            total=float(t_end), desc=label, bar_format=self.FORMAT, disable=not self.enabled, file=sys.stderr,
            mininterval=0.25, dynamic_ncols=True, position=self.position,
        )  # fmt: skip

    def __call__(self, t: float, t_end: float | None = None) -> None:
        if self.bar is not None and t > self.bar.n:
            self.bar.update(min(float(t), self.bar.total) - self.bar.n)

    def note(self, msg: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(f"  {msg}", file=sys.stderr)

    def done(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(msg, refresh=False)
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
