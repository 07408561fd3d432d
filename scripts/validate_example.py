"""The validation job from Python instead of the command line (same functions as `dmft validate`).

    python scripts/validate_example.py --out results/example
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import dmft  # noqa: E402
import validation  # noqa: E402
from validation import plots  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="results/example")
    args = p.parse_args()
    data = dmft.tasks.single_index(D=16, P=128, P_test=500, degree=2, key=jax.random.key(0))
    model = dmft.TwoLayer("relu")
    schedule = dmft.Schedule(eta0=0.5, steps=400, save_every=20)
    sweep = validation.lazy_to_rich(model, data, gamma0s=[0.1, 1.0], widths=[64, 256, 1024], seeds=8,
                                    schedule=schedule, solve_kw=dict(samples=4096), progress=True)
    for g in sweep.gamma0s:
        fit = sweep.scaling[g]["per_seed_fit"]
        c = validation.compare(sweep.solutions[g], sweep.runs[g][1024]).summary
        print(f"gamma0={g:g}: per-seed error {fit.describe()}; final test loss DMFT "
              f"{c['final_theory_loss']:.4f} vs networks {c['final_network_loss']:.4f}")
    import os
    os.makedirs(args.out, exist_ok=True)
    plots.width_scaling_plot(sweep).savefig(os.path.join(args.out, "width_scaling.png"), dpi=120)
    print(f"figure: {args.out}/width_scaling.png")


if __name__ == "__main__":
    main()
