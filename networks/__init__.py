"""Finite-width two-layer networks in the units of the DMFT (docs/conventions.md).

    import networks
    run = networks.train(model, data, width=1024, seeds=16, eta0=0.1, steps=1000, save_every=10)
"""

from .train import Run, default_optimizer, train

__all__ = ["train", "Run", "default_optimizer"]
