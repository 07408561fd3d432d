"""Speed of deep linear networks under SGD: thousands of runs in one compiled call.

The seed paper's default: input/output dimension 4, three hidden layers of width 10 (L = 4),
P = 20 whitened points with label noise 1, batch size 1, 1e5 steps, records (modes, losses,
balancedness, drift and diffusion per mode) every 100 steps, 1024 runs. Prints, measured in
the same run:

- runs x steps per second of `networks.train` (compilation excluded: the call is made twice),
  in float32 and float64;
- the same for a Python loop over seeds of the same jitted program (one seed per call),
  extrapolated from a few seeds, and the ratio;
- a large float32 matmul's rate on this machine, for scale (the step's flops against it);
- the GPU when one is present (the same script runs unchanged).

    python scripts/bench_deep_linear.py            # the full benchmark (about a minute per precision)
    python scripts/bench_deep_linear.py --quick    # 1e4 steps
"""

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dmft  # noqa: E402
import networks  # noqa: E402


def matmul_rate(n=2048, dtype=jnp.float32, reps=5):
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: jnp.matmul(x, x, precision="highest"))   # IEEE (no TF32 on a GPU)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        f(a).block_until_ready()
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def step_flops(d_in, d_out, width, depth, batch):
    """Multiply-adds of one SGD step (forward, backward, update) times two."""
    dims = [d_in] + [width] * (depth - 1) + [d_out]
    params = sum(dims[i] * dims[i + 1] for i in range(depth))
    return 2 * (3 * params * batch + params)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1e4 steps instead of 1e5")
    p.add_argument("--seeds", type=int, default=1024)
    p.add_argument("--json", help="also write the table here")
    args = p.parse_args()
    steps = 10_000 if args.quick else 100_000
    data = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0, 1.0, 0.5], P=20, label_noise=1.0, key=0)
    model = dmft.DeepLinear(depth=4, width=10, init_scale=0.3, init="aligned")
    sch = dmft.Schedule(eta0=0.003, steps=steps, save_every=100, batch_size=1)
    mm = matmul_rate()
    flops = step_flops(4, 4, 10, 4, 1)
    rows = []
    print(f"backend {jax.default_backend()}, devices {jax.devices()}; large float32 matmul: {mm / 1e9:.1f} GFlop/s")
    for dtype in ("float32", "float64"):
        networks.train(model, data, seeds=args.seeds, schedule=sch.replace(steps=200), dtype=dtype)
        networks.train(model, data, seeds=args.seeds, schedule=sch, dtype=dtype)          # compile
        t = time.perf_counter()
        run = networks.train(model, data, seeds=args.seeds, schedule=sch, dtype=dtype)
        wall = time.perf_counter() - t
        rate = args.seeds * steps / wall
        # a Python loop over seeds of the same jitted program, one seed per call
        loop_steps = min(steps, 10_000)
        one = sch.replace(steps=loop_steps)
        networks.train(model, data, seeds=1, schedule=one, dtype=dtype, block=1)          # compile
        n_loop = 4
        t = time.perf_counter()
        for s in range(n_loop):
            networks.train(model, data, seeds=1, schedule=one, dtype=dtype, block=1,
                           key=jax.random.fold_in(jax.random.key(0), s))
        loop_rate = n_loop * loop_steps / (time.perf_counter() - t)
        rows.append({"dtype": dtype, "runs": args.seeds, "steps": steps, "wall_s": wall,
                     "runs_x_steps_per_s": rate, "loop_runs_x_steps_per_s": loop_rate,
                     "ratio_vs_loop": rate / loop_rate, "gflops": rate * flops / 1e9,
                     "fraction_of_matmul": rate * flops / mm, "finite": bool(np.all(np.isfinite(run.modes)))})
    print(f"\n{'dtype':<8} {'runs':>5} {'steps':>7} {'wall s':>8} {'runs*steps/s':>13} {'loop':>10} "
          f"{'x loop':>7} {'GFlop/s':>8} {'of matmul':>9}")
    for r in rows:
        print(f"{r['dtype']:<8} {r['runs']:>5} {r['steps']:>7} {r['wall_s']:>8.1f} {r['runs_x_steps_per_s']:>13.3g} "
              f"{r['loop_runs_x_steps_per_s']:>10.3g} {r['ratio_vs_loop']:>7.0f} {r['gflops']:>8.2f} "
              f"{100 * r['fraction_of_matmul']:>8.1f}%")
    print("\n(target: 1024 runs x 1e5 steps under 60 s on a 2-core CPU; the step is a chain of tiny "
          "matrices, so it is bound by memory traffic and per-kernel overhead, not by flops)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"matmul_flops": mm, "rows": rows, "backend": jax.default_backend()}, fh, indent=1)


if __name__ == "__main__":
    main()
