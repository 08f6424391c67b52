"""scripts/bench's size table on two tiny nets: every field is there and finite (no timing asserts)."""

from __future__ import annotations

import math

import pytest
import torch

from scripts.bench import gpu as bench_gpu
from scripts.bench import size as bench_size
from scripts.bench import stiff as bench_stiff

# its tests on one xdist worker (--dist loadgroup): its module fixture (the size table) is made once per worker
pytestmark = pytest.mark.xdist_group("test_bench")

FIELDS = {
    "width", "depth", "p", "hd3", "grad_plain_s", "grad_module_s", "grad_held_s", "grad_theta_s", "sgd_steps",
    "sgd_plain_s", "sgd_lab_s", "flow_horizon", "flow_picked_s_per_t", "flow_picked_nfe", "flow_alt_s_per_t",
    "lam_max", "analysis_point_s", "analysis_in_grads", "analysis_points", "analysis_share",
}  # fmt: skip


@pytest.fixture(scope="module")
def rows():
    return bench_size.size_table(
        [(3, 2), (4, 3)], repeat=1, horizon=0.1, sgd_budget_s=0.005, log=lambda _: None
    )


def test_size_rows_have_every_field_finite_and_positive(rows):
    assert [(r["width"], r["depth"], r["p"]) for r in rows] == [(3, 2, 18), (4, 3, 48)]
    for r in rows:
        for key in FIELDS:
            assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        assert 0 < r["analysis_share"] < 1
        assert r["grad_rel_diff"] < 1e-12  # the module's gradient is the plain closed form's
        assert math.isfinite(r["peak_mb"]) and r["peak_mb"] >= 0
        assert r["flow_picked"] in bench_size.flow_candidates(r["p"]) and r["flow_alt"] != r["flow_picked"]
        assert all(v > 0 for v in r["flow_s_per_t"].values())
        assert r["analysis_kind"] == "dense"


def test_size_report_is_a_markdown_table_with_the_fit(rows):
    lines = bench_size.size_report(rows, min_hd3=1)
    assert lines[0].startswith("| w | h | p |") and len(lines[2].split("|")) == len(lines[0].split("|"))
    assert any("Fitted exponent" in line for line in lines)
    k, n = bench_size.fit_exponent(rows, min_hd3=1)
    assert n == 2 and math.isfinite(k)


def test_the_gpu_rows_say_why_they_are_skipped_and_their_code_runs_on_the_cpu():
    if not torch.cuda.is_available():
        assert "torch.cuda.is_available() is False" in bench_gpu.gpu_section(1)[0]
    row = bench_gpu.gpu_row(8, torch.float32, 1, device="cpu")
    assert row["n_mm"] == 9 and all(row[k] > 0 for k in ("cpu_s", "gpu_s", "step_s", "bare_s"))
    ens = bench_gpu.ensemble_row(members=4, device="cpu", steps=10)  # the same code twice: equal bits
    assert (
        ens["gd_rel_dev"] == 0.0
        and ens["flow_rel_dev"] == 0.0
        and ens["flow_cpu_status"] == ens["flow_dev_status"]
    )


def test_the_stiff_ensemble_rows_report_times_counts_and_deviations():
    res = bench_stiff.stiff_rows(members=3, t_max=1.0, repeat=1, sample=2, radau_sample=1, log=lambda _: None)
    (run,) = res["runs"]
    timed = ("radau_batch", "bdf_batch", "rk45", "lsoda", "tight", "chunks_1", "chunks_w")
    assert all(run[f"{m}_{k}"] > 0 for m in timed for k in "wc")
    assert len(res["dev"]["radau_batch_vs_lsoda"]) == 2 and len(res["dev"]["radau_batch_vs_radau"]) == 1
    assert all(math.isfinite(v) for vs in res["dev"].values() for v in vs)
    radau = res["counts"]["radau_batch"]
    assert radau["batch_nfe"] > 0 and radau["nfe"][1] > radau["n_steps"][1] > 0
    lines = bench_stiff.stiff_section(3, 1.0, 1, 2, 1, log=lambda _: None)
    assert any(line.startswith("| repeat |") for line in lines)
    assert any("own radau at 1e-12" in line for line in lines)


def test_a_bench_section_imports_no_other_section():
    """scripts/bench/: a section module imports only scripts.bench.common and scripts.bench._out of the
    benchmarks (what several share lives there); _sections alone gathers the sections, and a command
    line (__main__, cost, flow) imports its own body besides."""
    import ast
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "scripts" / "bench"
    shared = {"scripts.bench.common", "scripts.bench._out"}
    own = {
        "__main__": {"scripts.bench._sections"},
        "cost": {"scripts.bench._cost"},
        "flow": {"scripts.bench._flow"},
    }
    bad = []
    for path in bench.glob("*.py"):
        if path.name == "_sections.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scripts.bench"):
                if node.module not in shared | own.get(path.stem, set()):
                    bad.append(f"{path.name} imports {node.module}")
            if isinstance(node, ast.ImportFrom) and node.level:
                bad.append(f"{path.name} has a relative import")
    assert not bad, bad


def test_a_reports_path_is_made_ready_before_any_work(tmp_path, capsys):
    """``--out`` into a folder that did not exist ended scripts/bench/parallel.py's whole run in a
    traceback with nothing written; its folder is made at the start, and a directory is refused then."""
    from scripts.bench._out import ready_out

    deep = tmp_path / "new" / "folder" / "report.txt"
    assert ready_out(deep) == deep and deep.parent.is_dir() and not deep.exists()
    assert ready_out(None) is None
    with pytest.raises(SystemExit) as refused:
        ready_out(tmp_path)
    assert refused.value.code == 2
    assert (
        capsys.readouterr().err == f"error: --out: {tmp_path} is a directory; give the report's file path\n"
    )


def test_a_bench_command_line_imports_neither_torch_nor_its_sections():
    """The three command lines check their arguments before their bodies are imported (a refusal took
    2-5 s of torch's and the sections' imports): importing them brings in no torch, and the section
    names they accept are the sections' table's (read from its source: importing it costs seconds)."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    probe = "import sys, scripts.bench.__main__, scripts.bench.cost, scripts.bench.flow; print(sorted(m for m in ('torch', 'scipy', 'scripts.bench._sections') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "[]\n", "")
    from scripts.bench.__main__ import SECTION_NAMES

    table = next(
        node.value
        for node in ast.parse((root / "scripts" / "bench" / "_sections.py").read_text()).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SECTIONS"
    )
    assert tuple(ast.literal_eval(k) for k in table.keys) == SECTION_NAMES


def test_a_bench_argument_out_of_range_is_refused_in_one_line_before_any_work(tmp_path, capsys):
    """The benchmarks checked their arguments by type only: --repeat 0 left every timing at infinity and
    a report of dashes; a negative --t-max or a NaN learning rate ran until something failed inside. Now
    the scripts' one-line refusal, exit code 2, before any section runs or the report's folder is made
    (one script from its command line; the other cases of the same types: the in-process table)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    report = tmp_path / "new" / "report.txt"
    for module, args, said in [  # each from its command line: checked before torch is imported (0.1 s)
        ("scripts.bench.flow", ["--tols", "1e-8", "1.5"],
         "--tols: expected a number above 0 and below 1 (relative tolerance), got '1.5'"),
        ("scripts.bench.cost", ["--repeat", "0"],
         "--repeat: expected an integer from 1 to 1000 (timings, the best kept), got '0'"),
        ("scripts.bench", ["--sections", "size", "--dt", "400"],
         "--dt: 400 is longer than --t-max 300: the grid would hold one point"),
    ]:  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", module, *args, "--out", str(report)], cwd=root,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert (proc.returncode, proc.stderr, proc.stdout) == (2, f"error: {said}\n", "")
        assert not report.parent.exists()  # the report's folder is made only once the arguments pass
    from scripts.bench.__main__ import parse_args

    for args, said in [
        (["--repeat", "0"], "--repeat: expected an integer from 1 to 1000 (timings, the best kept), got '0'"),
        (["--t-max", "-1"], "--t-max: expected a number above 0 (flow time), got '-1'"),
        (["--lrs", "0.01", "nan"], "--lrs: expected a number above 0 (learning rate), got 'nan'"),
        (["--dt", "400"], "--dt: 400 is longer than --t-max 300: the grid would hold one point"),
        (["--ensemble-sample", "65"], "--ensemble-sample: expected an integer from 1 to 64 (members solved one by one), got '65'"),
        (["--flow-horizon", "inf"], "--flow-horizon: expected a number above 0 (flow time), got 'inf'"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as refused:
            parse_args(args)
        assert (refused.value.code, capsys.readouterr().err) == (2, f"error: {said}\n")
    assert parse_args(["--lrs", "0.02", "--t-max", "2", "--dt", "0.5", "--repeat", "1"]).lrs == [0.02]
