"""The lab's first stage: from a config to a checked plan, or a refusal before any work.

* the typed schema (``_schema``: one dataclass per config group, registered in Hydra's ConfigStore,
  ``typed_config`` for plain dicts), the rules across keys (``_rules``), the sizes and work a run may
  take (``_budget``, ``_float64``), the size-dependent choices (``_choose``), the user's files
  (``_files``, ``_paths``), the Lightning classes a config names (``_targets``), where a run may write
  (``_outdir``), the joblib launcher's keys (``_launcher``) and the config files themselves (``_configfiles``);
* :func:`prepare` (``_prepare``) runs them all, the checks on the config alone first (no torch is
  imported by them), then builds (``_build``) and returns a :class:`Plan` (``_plan``: the typed config,
  the seeds, the problem, the initial weights, the solver and the estimates), or raises
  :class:`ConfigError`;
* how the lab reports a problem: :class:`ConfigError` (one line naming the key and the allowed values),
  :class:`ExitCode`, and :func:`console_warnings`.

Names are imported on first use (``dlnlab._lazy``): importing ``ConfigError`` imports neither torch nor
Hydra.
"""

from dlnlab._lazy import lazy_exports

_EXPORTS = {
    "._errors": [
        "ConfigError",
        "ExitCode",
        "WriteFailed",
        "console_warnings",
        "keyed",
        "shown",
        "resume_shell_command",
    ],  # fmt: skip
    "._schema": [
        "TrainConfig",
        "DATA_OPTIONS",
        "INIT_OPTIONS",
        "typed_config",
        "to_plain",
        "describe_omegaconf_error",
        "unknown_key_message",
        "config_class",
    ],
    "._omegaconf_errors": ["key_in_file_message"],
    "._prepare": ["prepare"],
    "._plan": ["Plan", "Seeds"],
    "._seeds": ["derive_seed"],
    "._choose": [
        "SCIPY_MAX_WEIGHTS",
        "EDGE_STEPS",
        "CHUNK_MEMBERS",
        "choose_analysis",
        "choose_flow",
        "estimated_run_seconds",
        "edge_work",
        "flow_seconds",
    ],  # fmt: skip
    "._budget": ["flow_nfe_budget"],
    "._rules": ["FIXED_STEP_STABILITY"],
    "._files": ["load_weights"],
    "._targets": ["current_targets"],
    "._outdir": [
        "check_run_dir",
        "check_override_text",
        "check_job_dirs",
        "check_relative_paths",
        "output_dir",
    ],
    "._launcher": ["launcher_note"],
    "._configfiles": ["check_expansion", "describe_yaml_error"],
    "._times": ["exact_times", "flow_time_count", "series_grid"],
    "._doc": ["render"],
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
