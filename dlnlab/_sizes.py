"""Sizes at which the core changes method, in a module of their own: the lab's config schema takes its
defaults from here without importing torch (a refused config is answered before torch is imported)."""

__all__ = ["DENSE_HESSIAN_MAX"]

# Dense Hessian eigensolvers up to this many weights (p x p float64: 18 MB), Lanczos on Hessian-vector
# products above; the lab's log.hessian_dense_max defaults to it.
DENSE_HESSIAN_MAX = 1500
