"""Benchmark of finite-width training: time per step and GFLOP/s against a matmul.

For widths 256..65536 and 1..64 seeds (vmapped), P=256 training points in D=32,
tanh with trained readouts, plain gradient descent. GFLOP/s counts the matrix
products of one step per seed: forward x w^T (2 P D N) and phi a (2 P N), backward
dL/dw = (dL/dh)^T x (2 P D N), dL/da = phi^T r and dL/dphi = r a^T (4 P N), so
4 P D N + 6 P N (no gradient is taken with respect to the inputs); the table also
prints XLA's own flop count of the step over this count (near 1: the count is honest; an
earlier version counted 8 P D N and overstated the fraction of the matmul rate 1.9x).
Sizes whose arrays would not fit in memory are skipped and said so. The time per step
excludes the records (runs of two lengths, differenced); a record's time is printed beside
(the same steps saved at every step and saved once, differenced).

A second table: minibatch SGD against full-batch descent at a larger P (a step's cost and the
batch draw's).

Run: python scripts/bench_networks.py [--quick]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dmft  # noqa: E402
import networks  # noqa: E402
from networks.train import memory_estimate  # noqa: E402


def matmul_gflops(n=2048, reps=5):
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a, b: jnp.matmul(a, b, precision="highest"))   # IEEE on every device
    f(a, a).block_until_ready()
    t = time.perf_counter()
    c = a
    for _ in range(reps):
        c = f(a, c)
    c.block_until_ready()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def xla_flops_ratio(P, D, n):
    """XLA's flop count of one seed's gradient step (value_and_grad of the loss) over the
    hand count 4 P D N + 6 P N."""
    x, y = jnp.ones((P, D)), jnp.ones((P, 1))
    params = {"w": jnp.ones((n, D)), "a": jnp.ones((n, 1))}

    def loss(p):
        r = y - jnp.tanh(x @ p["w"].T / D ** 0.5) @ p["a"] / n
        return jnp.sum(r * r) / (2 * P)

    cost = jax.jit(jax.value_and_grad(loss)).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    try:
        return float(cost["flops"]) / (4 * P * D * n + 6 * P * n)
    except (KeyError, TypeError):
        return float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--memory-gb", type=float, default=6.0, help="skip sizes needing more")
    args = p.parse_args()
    ref = matmul_gflops()
    P, D = 256, 32
    data = dmft.tasks.single_index(D=D, P=P, P_test=0, degree=2, key=jax.random.key(0))
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    widths = [256, 1024, 4096] if args.quick else [256, 1024, 4096, 16384, 65536]
    seed_counts = [1, 8] if args.quick else [1, 8, 64]
    steps = 20
    print(f"device: {jax.devices()[0]}   float64 matmul 2048^3: {ref:.1f} GFLOP/s")
    print(f"P={P}, D={D}, tanh, trained readouts, gradient descent; ms/step = (run of {3 * steps} steps\n"
          f"- run of {steps}) / {2 * steps}, each the faster of two: the records at both ends (the\n"
          f"(P, P) kernels of every seed, for the alignment) excluded; one record's time beside\n"
          f"({steps} steps saved at every step - saved once, / {steps - 1})\n")
    print(f"{'width':>7} {'seeds':>6} {'ms/step':>9} {'GFLOP/s':>9} {'vs matmul':>10} {'XLA/count':>10} "
          f"{'record ms':>10}")
    for n in widths:
        for s in seed_counts:
            need = memory_estimate(data, n, s, 2, False)
            if need > args.memory_gb * 2 ** 30:
                print(f"{n:7d} {s:6d}   skipped: needs about {need / 2 ** 30:.0f} GiB")
                continue
            runs = []
            for k in (steps, 3 * steps):    # the difference: per step without the two records
                kw = dict(width=n, seeds=s, eta0=0.1, steps=k, save_every=k,
                          max_memory_gb=args.memory_gb)
                networks.train(model, data, **kw)                    # compile
                runs.append(min(networks.train(model, data, **kw).info["run_s"] for _ in range(2)))
            per_step = (runs[1] - runs[0]) / (2 * steps)
            saves = []
            for every in (steps, 1):    # the same steps saved once or at every step
                kw.update(steps=steps, save_every=every)
                networks.train(model, data, **kw)                    # compile
                saves.append(min(networks.train(model, data, **kw).info["run_s"] for _ in range(2)))
            record = (saves[1] - saves[0]) / (steps - 1)
            flops = s * (4 * P * D * n + 6 * P * n)
            print(f"{n:7d} {s:6d} {per_step * 1e3:9.2f} {flops / per_step / 1e9:9.1f} "
                  f"{flops / per_step / 1e9 / ref:10.0%} {xla_flops_ratio(P, D, n):10.2f} "
                  f"{record * 1e3:10.1f}")

    sgd_table(args)


def _per_step(model, data, steps, **kw):
    """ms per step without the two records: (run of 3 steps - run of steps) / 2 steps."""
    runs = []
    for k in (steps, 3 * steps):
        networks.train(model, data, steps=k, save_every=k, **kw)                    # compile
        runs.append(min(networks.train(model, data, steps=k, save_every=k, **kw).info["run_s"] for _ in range(2)))
    return (runs[1] - runs[0]) / (2 * steps)


def sgd_table(args):
    """Minibatch SGD against full-batch descent: a step computes on its B points alone, so its
    cost falls with B until drawing the batch (`dmft.schedule.batch_indices`) and the update
    of the weights bind; the draw's time alone is printed beside."""
    from dmft.schedule import FLOYD_RATIO, batch_indices

    P, D = (2048, 32) if args.quick else (8192, 32)
    n, s, steps = (512, 4, 10) if args.quick else (1024, 8, 20)
    data = dmft.tasks.single_index(D=D, P=P, P_test=0, degree=2, key=jax.random.key(0))
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    kw = dict(width=n, seeds=s, eta0=0.1, max_memory_gb=args.memory_gb)
    print(f"\nminibatch SGD: P={P}, D={D}, width {n} x {s} seeds (each seed its own batches); ms/step as "
          f"above,\n{steps} and {10 * steps} steps for full batch and SGD; 'draw' is one batch's indices alone (Floyd's algorithm while B^2 <= "
          f"{FLOYD_RATIO} P, else a permutation of P)\n")
    print(f"{'batch':>7} {'ms/step':>9} {'vs full':>8} {'draw us':>8}")
    full = _per_step(model, data, steps, **kw)
    print(f"{'full':>7} {full * 1e3:9.2f} {1:8.2f} {'-':>8}")
    for B in (P // 4, 256, 64, 8):
        per = _per_step(model, data, 10 * steps, batch_size=B, **kw)      # (cheaper steps: more of them)
        draw = jax.jit(lambda k, B=B: jax.lax.fori_loop(0, 200, lambda i, a: a + batch_indices(k, i, P, B)[0], 0))
        draw(jax.random.key(0)).block_until_ready()
        t = time.perf_counter()
        draw(jax.random.key(1)).block_until_ready()
        print(f"{B:7d} {per * 1e3:9.2f} {per / full:8.2f} {(time.perf_counter() - t) / 200 * 1e6:8.1f}")


if __name__ == "__main__":
    main()
