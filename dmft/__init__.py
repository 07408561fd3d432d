"""Dynamical mean field theory of wide two-layer networks (docs/conventions.md, docs/derivations.md).

    import dmft
    data     = dmft.tasks.single_index(D=32, P=128, degree=2)
    model    = dmft.TwoLayer(activation="tanh", gamma0=1.0)
    schedule = dmft.Schedule(eta0=0.1, steps=1000, save_every=10)
    sol      = dmft.solve(model, data, schedule)

Importing this package never changes global JAX configuration; call
`jax.config.update("jax_enable_x64", True)` in your entry point for float64 (without it the
solvers and networks compute in float32 and say so: `dmft.errors.Float32Warning`).
"""

from . import activations, checks, deep_linear, errors, io, kernels, sampling, tasks
from .batch import BATCH_FIELDS, BatchProgram, solve_batch
from .errors import (ConfigError, DivergenceError, DmftError, InputError, NotConverged, OutputError,
                     ResultFileError)
from .plan import SolvePlan, plan_solve
from .problem import Dataset, DeepLinear, LinearTeacher, TwoLayer
from .schedule import Schedule
from .solve import DYNAMICS, METHODS, Solution, exact_closure, sgd_mean, solve
from .trajectory import Trajectory

__all__ = ["Dataset", "TwoLayer", "DeepLinear", "LinearTeacher", "Schedule", "solve", "sgd_mean", "Solution", "Trajectory", "plan_solve",
           "SolvePlan", "DmftError", "InputError", "ConfigError", "DivergenceError", "NotConverged",
           "OutputError", "ResultFileError", "METHODS", "DYNAMICS", "exact_closure", "BatchProgram", "solve_batch",
           "BATCH_FIELDS", "activations", "checks", "deep_linear", "errors", "kernels", "sampling", "tasks", "io"]

__version__ = "0.1.0"
