"""Dynamical mean field theory of wide two-layer networks (see THEORY.md / docs/conventions.md).

    import dmft
    data  = dmft.tasks.single_index(D=32, P=128, degree=2)
    model = dmft.TwoLayer(activation="tanh", gamma0=1.0)
    sol   = dmft.solve(model, data, eta0=0.1, steps=1000, save_every=10)

Importing this package never changes global JAX configuration; call
`jax.config.update("jax_enable_x64", True)` in your entry point for float64.
"""

from . import activations, io, kernels, sampling, tasks
from .batch import BATCH_FIELDS, BatchProgram, solve_batch
from .problem import Dataset, TwoLayer
from .runner import DivergenceError, NotConverged
from .solve import DYNAMICS, METHODS, Solution, exact_closure, solve

__all__ = ["Dataset", "TwoLayer", "solve", "Solution", "DivergenceError", "NotConverged",
           "METHODS", "DYNAMICS", "exact_closure", "BatchProgram", "solve_batch", "BATCH_FIELDS", "activations", "kernels", "sampling", "tasks",
           "io"]

__version__ = "0.1.0"
