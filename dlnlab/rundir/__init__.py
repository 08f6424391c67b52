"""The run directory: its files' names, the atomic writers, and the defensive reader.

Below the lab and the plots (``core < rundir < plots < lab < scripts``): the lab writes a run through
it, and the plots, the scripts and a resume read one through it, without importing the lab. The
contract itself (which file holds what) is docs/results.md.

* names: ``flow`` and ``<kind>_lr_<lr>`` (:func:`series_name`, :func:`lr_series_name`,
  :func:`parse_series_name`);
* writing: :func:`claim_directory` (one directory per run), :func:`atomic_path` and the writers built on
  it (:func:`save_npz`, :func:`write_json`, :func:`write_text`, :func:`write_bytes`, :func:`write_problem`);
* reading: :func:`load_run` (a :class:`RunData` of :class:`Series`), :func:`read_npz`,
  :func:`read_summary`, :func:`read_overrides`; whether a directory's files can be used at all: :func:`run_damage`;
* :mod:`dlnlab.rundir.signals`: SIGINT and SIGTERM held during a write and turned into a clean stop.
"""

from dlnlab.rundir._damage import (
    MAX_NPZ_BYTES,
    MAX_SUMMARY_BYTES,
    json_kind,
    npz_damage,
    read_summary_object,
    run_damage,
)
from dlnlab.rundir._names import (
    CENTRAL_PREFIX,
    EDGE_PREFIX,
    FLOW,
    MODIFIED_PREFIX,
    SGD_PREFIX,
    SME_PREFIX,
    format_lr,
    lr_from_name,
    lr_series_name,
    parse_series_name,
    series_label,
    series_name,
    series_order_key,
)
from dlnlab.rundir._read import (
    STATUS_NOTE,
    RunData,
    Series,
    load_run,
    read_npz,
    read_overrides,
    read_summary,
)
from dlnlab.rundir._write import (
    atomic_path,
    claim_directory,
    out_of_room,
    problem_arrays,
    save_npz,
    write_bytes,
    write_json,
    write_problem,
    write_text,
)

__all__ = [
    "FLOW",
    "SGD_PREFIX",
    "MODIFIED_PREFIX",
    "SME_PREFIX",
    "CENTRAL_PREFIX",
    "EDGE_PREFIX",
    "series_name",
    "lr_series_name",
    "parse_series_name",
    "lr_from_name",
    "format_lr",
    "series_label",
    "series_order_key",
    "claim_directory",
    "out_of_room",
    "atomic_path",
    "save_npz",
    "write_json",
    "write_text",
    "write_bytes",
    "write_problem",
    "problem_arrays",
    "read_npz",
    "read_summary",
    "read_overrides",
    "Series",
    "RunData",
    "load_run",
    "STATUS_NOTE",
    "run_damage",
    "npz_damage",
    "read_summary_object",
    "json_kind",
    "MAX_SUMMARY_BYTES",
    "MAX_NPZ_BYTES",
]
