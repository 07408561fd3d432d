"""Demo: infinite-width train/test loss at a few gamma0, with the lazy closed form.

Writes results/demo/{dmft_gamma0_*.npz,json, losses.png}. Run: make demo
"""

import argparse
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import dmft  # noqa: E402
from validation import plots  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="results/demo")
    p.add_argument("--gamma0", type=float, nargs="+", default=[0.05, 0.5, 1.0, 2.0])
    p.add_argument("--samples", type=int, default=8192)
    p.add_argument("--steps", type=int, default=1000)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data = dmft.tasks.single_index(D=32, P=256, P_test=1000, degree=2, key=jax.random.key(0))
    curves = {}
    for g in args.gamma0:
        model = dmft.TwoLayer("relu", gamma0=g)   # centered: the lazy limit is one curve
        kw = dict(eta0=0.5, steps=args.steps, save_every=10)
        sol = dmft.solve(model, data, samples=args.samples, progress=sys.stderr.isatty(), **kw)
        lz = dmft.solve(model, data, method="lazy", **kw)
        sol.save(os.path.join(args.out, f"dmft_gamma0_{g:g}"))
        label = f"gamma0 = {g:g}"
        curves[label] = (sol.t, sol.train_loss, sol.test_loss)
        lazy = (lz.t, lz.train_loss, lz.test_loss)
        print(f"{label:>14}: final train {sol.train_loss[-1]:.3e}  test {sol.test_loss[-1]:.3e} "
              f"(+- {sol.error['test_loss'][-1]:.1e})  lazy test {lz.test_loss[-1]:.3e}  "
              f"[{sol.info['method']}, {sol.info['wall_s']:.1f} s]")
    fig = plots.loss_curves(curves, lazy, title="ReLU two-layer DMFT, He2 single-index target, "
                                                "D=32, P=256")
    path = os.path.join(args.out, "losses.png")
    fig.savefig(path, dpi=120)
    print(f"figure: {path}\nresults: {args.out}/*.npz + *.json")


if __name__ == "__main__":
    main()
