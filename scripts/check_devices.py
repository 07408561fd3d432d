"""Every solver on every platform JAX has here: the same answers, and the time each takes.

Runs small float64 problems through each solver and network trainer on the CPU and on each
accelerator present (placed with `jax.default_device`), and prints per solver the seconds of
a first call (compilation included) and of a second one on each platform, and the largest
difference of its outputs between the accelerator and the CPU, relative to the output's RMS.
Without an accelerator it runs on the CPU alone and says so.

Differences are expected at rounding level (products and sums ordered otherwise on another
platform, amplified by the dynamics). A key's minibatches are the same on every platform
(`dmft.schedule.batch_indices`: Floyd's algorithm as a loop on a CPU, its parallel form
elsewhere), so the SGD rows are judged like the others. The exit status is 1 when a row
differs by more than its tolerance.

Run: python scripts/check_devices.py [--json FILE]
"""

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import dmft  # noqa: E402
import networks  # noqa: E402
from dmft import deep_linear as dl  # noqa: E402


def _batches(P, B, steps=200):
    """A key's minibatch indices for `steps` steps (`dmft.schedule.batch_indices`, jitted)."""
    from dmft.schedule import batch_indices

    draw = jax.jit(jax.vmap(lambda k: batch_indices(jax.random.key(5), k, P, B)))
    return np.asarray(draw(np.arange(steps)))


def _two_layer_cases():
    key = jax.random.key(7)
    data = dmft.tasks.single_index(D=16, P=64, P_test=128, degree=2, key=jax.random.key(1))
    tiny = dmft.tasks.single_index(D=2, P=32, P_test=64, degree=2, key=jax.random.key(1))
    kumar = dmft.tasks.kumar_quadratic(D=20, P=110, P_test=200, key=jax.random.key(0))
    quad = dmft.TwoLayer(dmft.activations.quadratic(0.02), gamma0=1.0, readout="fixed")
    sch = dict(eta0=0.5, steps=200, save_every=20)
    forward = dict(method="forward", samples=4096, replicas=4, key=key, kernels=False)

    def solve(model, d, **kw):
        s = dmft.solve(model, d, **kw)
        return {"train_loss": s.train_loss, "f_test": s.f_test}

    return [
        # the same batches on every platform, exactly: Floyd's algorithm at B = 64 and at its bound
        # B^2 = 512 P (collisions many sweeps deep), and the permutation past it
        ("minibatch indices (3 sizes)", 0.0, lambda: {
            f"P={P},B={B}": _batches(P, B) for P, B in ((4096, 64), (4096, 1448), (600, 400))}),
        ("closure (quadratic, Kumar D=20)", 1e-8, lambda: solve(quad, kumar, eta0=2.0, steps=2000, save_every=100,
                                                            method="closure", kernels=False)),
        ("closure + kernels (linear)", 1e-8, lambda: solve(dmft.TwoLayer("linear", gamma0=1.0), data,
                                                           method="closure", **sch)),
        ("lazy limit (tanh)", 1e-8, lambda: solve(dmft.TwoLayer("tanh", gamma0=1.0), data, method="lazy", **sch)),
        ("forward relu (stratified)", 1e-6, lambda: solve(dmft.TwoLayer("relu", gamma0=1.0), data, **forward, **sch)),
        ("forward tanh (sobol)", 1e-6, lambda: solve(dmft.TwoLayer("tanh", gamma0=1.0), data, sampler="sobol",
                                                     **forward, **sch)),
        ("forward tanh (quadrature, D=2)", 1e-6, lambda: solve(dmft.TwoLayer("tanh", gamma0=1.0), tiny,
                                                               sampler="quadrature", replicas=1, method="forward",
                                                               kernels=False, **sch)),
        ("forward tanh, precision=mixed", 1e-4, lambda: solve(dmft.TwoLayer("tanh", gamma0=1.0), data,
                                                              precision="mixed", **forward, **sch)),
        ("forward relu + kernels", 1e-6, lambda: solve(dmft.TwoLayer("relu", gamma0=1.0), data,
                                                       **{**forward, "kernels": True}, **sch)),
        ("iterate (tanh)", 1e-6, lambda: solve(dmft.TwoLayer("tanh", gamma0=0.5), data, method="iterate",
                                                     samples=2048, replicas=2, key=key,
                                                     eta0=0.5, steps=40, save_every=4, kernels=False)),
        ("solve_batch (gamma0 x 4)", 1e-6, lambda: {
            k: v for k, v in dmft.solve_batch(dmft.TwoLayer("tanh", gamma0=1.0), data,
                                              {"gamma0": [0.25, 0.5, 1.0, 2.0]}, samples=2048, replicas=2,
                                              key=key, **sch).items()
            if k in ("train_loss", "test_loss")}),
        ("SGD forward (B=16)", 1e-6, lambda: solve(dmft.TwoLayer("relu", gamma0=1.0), data, batch_size=16,
                                                    batch_key=jax.random.key(3), **forward, **sch)),
        ("networks.train relu N=512 x 4", 1e-6, lambda: _run(networks.train(
            dmft.TwoLayer("relu", gamma0=1.0), data, width=512, seeds=4, key=key, **sch))),
        ("networks.train SGD (B=16)", 1e-6, lambda: _run(networks.train(
            dmft.TwoLayer("relu", gamma0=1.0), data, width=512, seeds=4, key=key, batch_size=16,
            batch_key=jax.random.key(3), **sch))),
    ]


def _run(r):
    return {"train_loss": r.train_loss, "f_test": r.f_test}


def _deep_linear_cases():
    online = dmft.tasks.linear_teacher(d_in=4, d_out=4, singular_values=[3.0, 2.0, 1.0, 0.5], P=None,
                                       label_noise=1.0, key=1)
    dln = dmft.DeepLinear(depth=4, width=10, init_scale=0.3, init="aligned")
    sgd = dict(eta0=0.003, batch_size=1, steps=3000, save_every=100)
    return [
        ("deep linear networks, online SGD x 256", 1e-6, lambda: {
            k: getattr(networks.train(dln, online, seeds=256, key=jax.random.key(2), **sgd), k)
            for k in ("modes", "train_loss", "diffusion")}),
        ("deep linear mode_sde x 512", 1e-6, lambda: {
            "modes": dl.mode_sde(dln, online, paths=512, key=jax.random.key(2), **sgd).modes}),
    ]


def _timed(fn, device):
    with jax.default_device(device):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        first = time.perf_counter() - t
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        second = time.perf_counter() - t
    return {k: np.asarray(v) for k, v in out.items() if v is not None}, first, second


def _rel_diff(a, b):
    worst = 0.0
    for k in a:
        x, y = a[k].astype(float), b[k].astype(float)
        scale = np.sqrt(np.mean(x ** 2)) or 1.0
        worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the table to this file")
    ap.add_argument("--only", help="run only the rows whose names start with one of these (comma-separated)")
    args = ap.parse_args()
    cpu = jax.devices("cpu")[0]
    others = [d for d in jax.devices() if d.platform != "cpu"]
    print(f"jax {jax.__version__}; CPU {cpu}; accelerators: {', '.join(map(str, others)) or 'none (CPU alone)'}")
    rows, bad = [], 0
    cases = _two_layer_cases() + _deep_linear_cases()
    if args.only:
        cases = [c for c in cases if c[0].startswith(tuple(args.only.split(",")))]
    head = f"{'solver':>40} {'cpu s (1st, 2nd)':>17}"
    for d in others:
        head += f" {d.platform + ' s (1st, 2nd)':>17} {'cpu/' + d.platform:>8} {'rel diff':>9} {'verdict':>7}"
    print(head)
    for name, tol, fn in cases:
        ref, c1, c2 = _timed(fn, cpu)
        line = f"{name:>40} {c1:8.2f} {c2:8.2f}"
        row = dict(solver=name, cpu_first_s=c1, cpu_s=c2, tolerance=tol, devices={})
        for d in others:
            out, g1, g2 = _timed(fn, d)
            finite = bool(all(np.all(np.isfinite(v)) for v in out.values() if v.dtype.kind == "f"))
            diff = _rel_diff(ref, out)
            ok = bool(finite and diff <= tol)
            bad += not ok
            line += f" {g1:8.2f} {g2:8.2f} {c2 / g2:8.2f} {diff:9.1e} {'ok' if ok else 'DIFFERS':>7}"
            row["devices"][str(d)] = dict(first_s=g1, s=g2, rel_diff=diff, finite=finite, ok=ok)
        print(line, flush=True)
        rows.append(row)
    print("rel diff: largest |accelerator - CPU| over an output's RMS, over its outputs (the minibatch\n"
          "rows train on the same batches on every platform). Seconds: one call, the first with its compilation.")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"jax": jax.__version__, "rows": rows}, fh, indent=1)
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
