"""The kinds of series a run can hold, one line each, in the order a run computes them.

The flow comes first (every other kind is compared with it); a kind comes after the kinds it
``needs``. Adding a kind: its module (see :mod:`dlnlab.lab.runner._kind`) and one line here.
"""

from __future__ import annotations

from dlnlab.lab.runner._central import CentralFlowKind
from dlnlab.lab.runner._edge import EdgeKind
from dlnlab.lab.runner._flow import FlowKind
from dlnlab.lab.runner._kind import SeriesKind
from dlnlab.lab.runner._modified import ModifiedFlowKind
from dlnlab.lab.runner._sgd import SGDKind
from dlnlab.lab.runner._sme import SMEKind

__all__ = ["KINDS"]

KINDS: tuple[SeriesKind, ...] = (
    FlowKind(),  # flow: the gradient flow
    ModifiedFlowKind(),  # modflow_lr_<lr>: GD's modified flow (flow.modified)
    CentralFlowKind(),  # cflow_lr_<lr>: GD's central flow (flow.central)
    SMEKind(),  # sme_lr_<lr>: the SME ensemble (sgd.sme)
    EdgeKind(),  # edge_lr_<lr>: GD at every step through its crossing of 2/eta (sgd.edge, flow.central)
    SGDKind(),  # sgd_lr_<lr>: (S)GD in Lightning
)
