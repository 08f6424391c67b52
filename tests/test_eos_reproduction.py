"""The edge of stability on the 4-4-4-3 net of docs/eos.md (seed 5, eta = 2 / (0.97 S_gf), t <= 40):
the qualitative facts that page reports, from ``dlnlab.eos.edge_report`` (about 25 s)."""

import pytest
import torch

from dlnlab import init
from dlnlab.eos import Outcome, edge_report
from dlnlab.network import pack
from tests._helpers import eos_problem


@pytest.mark.slow
def test_gd_hovers_at_the_edge_and_its_average_is_nearer_the_central_flow():
    dims = (4, 4, 4, 3)
    problem = eos_problem()
    theta0 = pack(init.gaussian(dims, 0.4, seed=5))
    s_gf = 8.685042658  # the gradient flow's limit (checked below through the report)
    lr = 2.0 / (0.97 * s_gf)
    rep = edge_report(problem, dims, theta0, lr, round(40 / lr))
    thr, d, c = rep.threshold, rep.diagnostics, rep.central
    assert rep.sharpness.flow_limit == pytest.approx(s_gf, rel=1e-6)
    # GD: reaches 2/eta, hovers within 10 % of it, its median within a few % of it, still there at t = 40
    assert d.t_edge is not None and d.t_edge < 2.0
    assert d.hover_share >= 0.95 and abs(d.median_ratio - 1) <= 0.03 and d.outcome == Outcome.AT_EDGE
    # the central flow: never past 2/eta, pinned at it while Sigma != 0
    assert c.max_excess <= 1e-7
    (start, end), *_ = c.edge_intervals
    pinned = (c.t > start + 0.5) & (c.t < end)
    assert float((c.sharpness[pinned] - thr).abs().max()) <= 1e-7 * thr
    # GD's window average is nearer the central flow than the gradient flow in the early edge phase
    early = (rep.t >= d.t_edge) & (rep.t <= d.t_edge + 10) & torch.isfinite(rep.distances.ratio)
    assert float(rep.distances.ratio[early].max()) <= 1.0
    # the predicted loss follows GD's averaged loss at first and parts from it later (GD keeps oscillating)
    assert rep.loss_parting is not None and rep.loss_parting > d.t_edge + 5
    assert rep.gfs.non_increasing() and rep.sharpness.gd_final < rep.sharpness.flow_limit
