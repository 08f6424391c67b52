"""The lab layer: the only part of dlnlab that touches Lightning, Hydra, TensorBoard or the disk.

Modules are imported on demand (``import dlnlab.lab`` itself is cheap): ``schema`` (typed configs),
``experiment`` (``run(cfg)``), ``training`` (Lightning), ``record`` (metrics, TensorBoard, npz).
"""
