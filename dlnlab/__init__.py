"""dlnlab: training dynamics of deep linear networks as a graph (one block adjacency matrix A)."""

from dlnlab.network import DeepLinearNetwork, Layout, pack, product, unpack
from dlnlab.problem import RegressionProblem

__version__ = "0.1.0"

__all__ = ["DeepLinearNetwork", "Layout", "RegressionProblem", "pack", "product", "unpack", "__version__"]
