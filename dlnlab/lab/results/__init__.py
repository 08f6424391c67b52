"""What a run reports: its summary, its series' entries, and the reports made from them.

* ``_records``, ``_summary_record``, ``_part_records``, ``_run_records``, ``_saddle_records``:
  summary.json typed, one dataclass per part (the series' entries, the ensemble's spread, the limit
  report, ``Summary``; the plateaus, exits, resumes, an order's pairs and the SME's spreads they hold;
  the run's seeds, grid, estimates, choices, error and process; a plateau's saddle evidence and
  escape), each ``to_dict()`` the JSON;
* ``_summary``: the run's state and ``summary.json`` (the series' entries, the convergence orders,
  the run's status and exit code), and how an (S)GD series' entry is read off its arrays (diverged,
  unstable);
* ``_ensemble``: an ensemble's entries, each member's and their spread;
* ``_limit``: SGD as a stochastic flow, the strong and weak errors and their orders (``sgd_limit``),
  and with the SME the two ensembles' spreads;
* ``_saddles``: the saddle analysis into the entries (plateaus, exits against the flow's);
* ``_console``, ``_console_table``, ``_limit_text``: the console's blocks, each reading the summary
  through its records; ``_report``: HParams, the Text tab and the figures through the loggers;
* ``_aggregate``: many runs (seeds, settings) into means and intervals, in memory (``aggregate_runs``,
  an ``Aggregate``) and written (``Aggregate.write``); ``_aggregate_collect`` finds the runs and groups
  them into settings (by what they ran: ``_setting_config``), ``_aggregate_stats`` computes, ``_aggregate_records`` types the results,
  ``_aggregate_text`` and ``_aggregate_figure`` show them.

Names are imported on first use (``dlnlab._lazy``).
"""

from dlnlab._lazy import lazy_exports

_EXPORTS = {
    "._override_columns": ["NOT_SETTINGS", "changes_no_number"],
    "._summary": [
        "RunResult",
        "RunState",
        "convergence_order",
        "finish_sgd_entry",
        "flow_loss_rise",
        "versions",
    ],
    "._records": [
        "SeriesEntry",
        "FlowEntry",
        "SGDEntry",
        "SMEEntry",
        "MemberEntry",
        "EnsembleSpread",
        "Spread",
        "UnknownKeys",
        "MissingKeys",
        "ABSENT",
        "entry_record",
        "EdgeEntry",
        "PredictionEntry",
    ],
    "._part_records": [
        "PlateauEntry",
        "PlateauExitEntry",
        "ModeExitSpread",
        "ResumeEntry",
        "ResumeCheck",
        "OrderPair",
        "RatioSpread",
        "SpreadRatios",
        "ExitSpreadRow",
    ],
    "._run_records": [
        "RunSeeds",
        "MemberSeeds",
        "GridEntry",
        "EstimatesEntry",
        "FlowChoiceEntry",
        "AnalysisEntry",
        "EdgeWorkEntry",
        "ErrorEntry",
        "ProcessEntry",
    ],
    "._saddle_records": [
        "SaddleEvidence",
        "PartialProductRanks",
        "ClosestEvidence",
        "NearestCriticalEntry",
        "EscapeEntry",
        "EscapeBranch",
    ],
    "._summary_record": [
        "RunStatus",
        "Summary",
        "OrderFit",
        "LimitReport",
        "ErrorOrder",
        "render_tables",
        "with_tables",
    ],
    "._ensemble": [
        "MEMBER_KEYS",
        "spread",
        "analyze_members",
        "finish_flow_members",
        "finish_sgd_members",
        "aggregate_members",
        "settle_status",
        "member_counts",
    ],  # fmt: skip
    "._eos": ["central_entry", "edge_lines", "settled_on_edge", "EDGE_LINE_WIDTH"],
    "._limit": ["sgd_limit", "record_limit", "add_exit_spreads", "LIMIT_KEYS", "EXPECTED_ORDER"],
    "._limit_text": ["limit_lines", "escapes_table"],
    "._saddles": ["analyze_run_saddles"],
    "._console": ["start_block", "resume_line", "results_block", "end_block", "tensorboard_command"],
    "._report": ["log_run", "log_limit", "make_figures", "plateau_markdown"],
    "._aggregate": ["Aggregate", "NothingToAggregate", "aggregate_runs"],
    "._aggregate_collect": ["Setting", "collect", "run_dirs", "setting_folder"],
    "._setting_config": [
        "SEED_KEYS",
        "Described",
        "default_config",
        "flat_config",
        "given_overrides",
        "name_parts",
    ],
    "._aggregate_records": [
        "AggregateRow",
        "SampleSpread",
        "ModeExits",
        "SampleOrders",
        "Orders",
        "CurveStats",
        "SeriesCurves",
        "SettingAggregate",
    ],
    "._aggregate_text": ["csv_text", "report"],
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
