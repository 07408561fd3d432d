"""The node-count check, paired against independent: precision and honesty over many keys.

For each problem, a reference (the mean of 4 solves at 2^17 nodes), then K keys at a small node count M a
replica (4 replicas). Each key is checked two ways, as `validation.node_bias` reads them:
- paired: the key's own nodes split in 2 and in 4 (`dmft.solve(node_split=k)`, what the validate,
  solve and scan jobs' node checks solve);
- independent: solves at M / 2 and M / 4 nodes a replica from other keys
  (`validation.sweep.node_check_key`, what the grok job's check solves).
Printed per (problem, M, kind): the spread over keys of the final loss's shift x(M) - x(M / 2)
and the mean of its reported error (their ratio says whether the error is honest), the same for the
extrapolation to infinitely many nodes, the extrapolation's mean offset from the reference (with
its error over keys), and the share of keys whose 95% t interval (replicas - 1 dof, the
reference's error in quadrature) covers the reference; then the plain solve's own offset and
coverage (what the extrapolation removes). The plain solve's spread is the scale:
paired, the extrapolation costs no precision; independent, about 2.5x.

`--loss train` does the same for the final train loss (the node bias check judges both).

Run: python scripts/bench_node_check.py [--quick] [--only NAME] [--loss test|train] [--paired-only]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

import dmft  # noqa: E402
import validation  # noqa: E402
from validation.sweep import node_check_key  # noqa: E402


def problems():
    """{name: (data, model, schedule, [M, ...])}."""
    return {
        "tanh single-index (D=8, P=64, gamma0=1)": (
            dmft.tasks.single_index(D=8, P=64, P_test=200, degree=2, key=0), dmft.TwoLayer("tanh", gamma0=1.0),
            dmft.Schedule(eta0=1.0, steps=200, save_every=50), [512]),
        "relu single-index (D=16, P=64, gamma0=2)": (
            dmft.tasks.single_index(D=16, P=64, P_test=200, degree=3, key=1), dmft.TwoLayer("relu", gamma0=2.0),
            dmft.Schedule(eta0=0.5, steps=300, save_every=100), [256, 1024]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="48 keys instead of 150")
    ap.add_argument("--only", help="run only the problems whose name starts with this")
    ap.add_argument("--loss", choices=("test", "train"), default="test", help="the loss checked (default test)")
    ap.add_argument("--paired-only", action="store_true", help="skip the independent solves")
    args = ap.parse_args()
    loss = f"{args.loss}_loss"
    K, R = (48 if args.quick else 150), 4
    t_q = stats.t.ppf(0.975, R - 1)
    print(f"{'problem':<42} {'M':>5} {'kind':>11} {'shift sd':>9} {'its se':>9} {'extrap sd':>9} {'its se':>9} "
          f"{'plain sd':>9} {'offset':>10} {'+-':>8} {'cover t':>7} {'s':>6} {'plain off':>10} {'+-':>8} {'cover':>6}")
    for name, (data, model, sch, Ms) in problems().items():
        if args.only and not name.startswith(args.only):
            continue
        kw = dict(schedule=sch, kernels=False)
        refs = [dmft.solve(model, data, samples=2 ** 17, replicas=16, key=jax.random.key(5000 + j), **kw)
                for j in range(4)]
        r0 = np.mean([getattr(r, loss)[-1] for r in refs])
        rse = np.sqrt(np.sum([r.error[loss][-1] ** 2 for r in refs])) / len(refs)
        print(f"{name:<42} reference {args.loss} loss {r0:.6g} +- {rse:.1e} (4 solves of 2^17 nodes)")
        for M in Ms:
            rows = {"paired": []} if args.paired_only else {"paired": [], "independent": []}
            secs = {"paired": 0.0, "independent": 0.0}
            for i in range(K):
                key = jax.random.key(1000 + i)
                full = dmft.solve(model, data, samples=M * R, replicas=R, key=key, **kw)
                for kind in rows:
                    t0 = time.perf_counter()
                    if kind == "paired":
                        fewer = [dmft.solve(model, data, samples=M * R, replicas=R, key=key, node_split=k, **kw)
                                 for k in (2, 4)]
                    else:
                        fewer = [dmft.solve(model, data, samples=M * R // k, replicas=R, key=node_check_key(key, k),
                                            **kw) for k in (2, 4)]
                    secs[kind] += time.perf_counter() - t0
                    nb = validation.node_bias(full, *fewer, loss=args.loss)
                    rows[kind].append([nb[q][-1] for q in ("full", "full_se", "shift", "shift_se", "extrapolated",
                                                            "extrapolated_se")])
            for kind, r in rows.items():
                x, x_se, shift, shift_se, ext, ext_se = np.array(r).T
                off, plain = ext - r0, x - r0
                cover = np.mean(np.abs(off) <= t_q * np.hypot(ext_se, rse))
                # (the plain solve's own offset and coverage beside it: what the extrapolation removes)
                plain_cover = np.mean(np.abs(plain) <= t_q * np.hypot(x_se, rse))
                print(f"{'':<42} {M:>5} {kind:>11} {np.std(shift, ddof=1):9.2e} {np.mean(shift_se):9.2e} "
                      f"{np.std(ext, ddof=1):9.2e} {np.mean(ext_se):9.2e} {np.std(x, ddof=1):9.2e} "
                      f"{np.mean(off):+10.2e} {np.std(off, ddof=1) / np.sqrt(K):8.1e} {cover:7.2f} "
                      f"{secs[kind]:6.1f} {np.mean(plain):+10.2e} {np.std(plain, ddof=1) / np.sqrt(K):8.1e} "
                      f"{plain_cover:6.2f}", flush=True)


if __name__ == "__main__":
    main()
