"""Honesty of the DMFT's error bars: coverage of `Solution.interval` over many keys.

For each problem, one reference solve at a large node count, then K independent keys at a
small one (`dmft.solve_batch`, point i uses fold_in(key, i)). Printed per replica count R:
the spread of the estimates over keys, the mean reported standard error, the bias against
the reference (with its standard error over keys), and the fraction of keys whose 95%
interval covers the reference, with the normal quantile and with Student's t at R - 1
degrees of freedom (what `Solution.interval` uses). Problems: a synthetic single-index
target and a real data set (`dmft.tasks.terrain`), tanh at gamma0 = 1 (rich), with the default
stratified sampler and randomized QMC (sampler="sobol"); and the demo's own problem (relu,
D = 32, P = 256, float32 products, gamma0 = 1) at its former 16384 nodes in 4 replicas and its
present 32768 in 8.

Run: python scripts/bench_errors.py [--quick]
"""

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

import dmft  # noqa: E402
from experiments import jobs, problem  # noqa: E402


def problems():
    """{name: (data, schedule, model, solve options, [(sampler, samples, replicas), ...])}."""
    sch = dmft.Schedule(eta0=0.5, steps=200, save_every=50)
    tanh = dmft.TwoLayer("tanh", gamma0=1.0)
    runs = [("stratified", S, R) for S, R in ((1024, 2), (1024, 4), (1024, 8), (1024, 16), (4096, 4), (4096, 8))]
    runs += [("sobol", S, R) for S, R in ((1024, 4), (4096, 4), (4096, 8))]
    out = {"single-index (D=8, P=64)": (dmft.tasks.single_index(D=8, P=64, P_test=128, degree=2, key=1), sch, tanh,
                                        {}, runs),
           "terrain (real, D=2, P=128)": (dmft.tasks.terrain(P=128, P_test=256, key=1), sch, tanh, {}, runs)}
    # the demo's own problem and settings (scripts/configs/default.toml: relu, D = 32, P = 256,
    # float32 products), at its former and its present node counts
    cfg = jobs.load_config(os.path.join(os.path.dirname(__file__), "configs", "default.toml"))
    out["demo (relu, D=32, P=256)"] = (problem.build_data(cfg["task"]), problem.build_schedule(cfg["train"]),
                                       problem.build_model(cfg["model"], 1.0), {"precision": "mixed"},
                                       [("stratified", 16384, 4), ("stratified", 32768, 8)])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="48 keys instead of 200")
    ap.add_argument("--only", help="run only the problems whose name starts with this")
    args = ap.parse_args()
    K = 48 if args.quick else 200
    print(f"{'problem':<28} {'sampler':>10} {'S':>5} {'R':>3} {'spread':>9} {'mean SE':>9} {'bias':>10} {'+-':>8} "
          f"{'cover N':>7} {'cover t':>7} {'s':>6}")
    for name, (data, sch, model, opts, runs) in problems().items():
        if args.only and not name.startswith(args.only):
            continue
        ref = dmft.solve(model, data, sch, samples=2 ** 17, replicas=8, key=jax.random.key(999), kernels=False,
                         max_memory_gb=8.0, **opts)
        r0, rse = ref.test_loss[-1], ref.error["test_loss"][-1]
        print(f"{name:<28} reference {r0:.6f} +- {rse:.1e} (2^17 nodes)")
        for sampler, S, R in runs:
            t = time.perf_counter()
            res = dmft.solve_batch(model, data, {"gamma0": [model.gamma0] * K}, schedule=sch, samples=S, replicas=R,
                                   key=jax.random.key(S + R), batch_size=16 if S <= 4096 else max(1, 32768 // S),
                                   sampler=sampler, **opts)     # points per compiled call: memory
            est, se = res["test_loss"][:, -1], res["error.test_loss"][:, -1]
            z = np.abs(est - r0) / se
            print(f"{'':<28} {sampler:>10} {S:>5} {R:>3} {est.std(ddof=1):9.2e} {se.mean():9.2e} {est.mean() - r0:+10.2e} "
                  f"{est.std(ddof=1) / np.sqrt(K):8.1e} {np.mean(z < 1.96):7.2f} "
                  f"{np.mean(z < stats.t.ppf(0.975, R - 1)):7.2f} {time.perf_counter() - t:6.1f}", flush=True)


if __name__ == "__main__":
    main()
