"""The lab's run itself: :func:`run` and :func:`resume`.

The driver (``_driver``) takes a checked plan (``dlnlab.lab.config``), holds the run directory's lock
(``_lock``), installs the signal handlers, writes ``problem.npz`` and ``summary.json``, runs the
series, then the analysis and the figures. The series are of kinds (``_kind``: the interface, read its
docstring to add one), listed once in ``_registry``: the flow (``_flow``, recorded while the solver
runs, ``_flow_stream``), GD's modified flows (``_modified``), GD's central flows (``_central``), the
SME ensembles (``_sme``), (S)GD at each learning rate in Lightning (``_sgd``, ``_training``) and GD at
every step through its edge of stability (``_edge``); ``_series`` runs them all the same way, in
one loop over the learning rates, with what they share in ``_context``. A resumed run reads back what
its directory holds (``_resume``).

Names are imported on first use (``dlnlab._lazy``): Lightning is imported once a config has passed.
"""

from dlnlab._lazy import lazy_exports

_EXPORTS = {
    "._driver": ["run", "resume"],
    "._lock": ["RunLock", "lock_holder", "claim_run_dir", "release_claims", "hold_dir"],
    "._training": ["train_series", "series_grid", "checkpoint_state", "SGDModule", "SeriesOutcome"],
    "._sme": ["stop_diverged"],
    "._kind": ["SeriesKind", "SeriesTask", "SeriesDone", "LrTimes", "Resume"],
    "._registry": ["KINDS"],
    "._context": ["SeriesContext"],
    "._ahead": ["start_early", "keep_plan"],
    "._flow_chunks": ["solve_in_chunks"],
    "._fork": ["available_cores"],
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
