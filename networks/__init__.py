"""Finite-width two-layer networks in the units of the DMFT (docs/conventions.md).

    import networks
    run = networks.train(model, data, width=1024, seeds=16, eta0=0.1, steps=1000, save_every=10)
    run = networks.train(model, data, schedule=dmft.Schedule(...))    # the protocol dmft.solve takes
"""

from . import deep_linear
from .deep_linear import DeepLinearRun
from .train import Run, TrainPlan, default_optimizer, init_params, plan_train, train

__all__ = ["train", "Run", "DeepLinearRun", "default_optimizer", "plan_train", "TrainPlan",
           "init_params", "deep_linear"]
