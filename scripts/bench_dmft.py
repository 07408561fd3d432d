"""Benchmark of the DMFT solvers: speed against a large matmul, and accuracy per cost.

Prints three tables, all measured in this run on this machine:
1. forward solver hot loop: time per step (records excluded; one record timed beside), achieved GFLOP/s of its matrix
   products, the ratio to a large matmul timed here, and the time of the step's two
   node GEMMs alone at its shapes (on an accelerator, two larger sizes too);
2. the Kumar et al. Fig. 1 setting (D=100, P=550, 1000 test points, eps=0.02,
   gamma0=1, 1e5 steps at eta0=2) through the exact closure, in float64 and with
   precision="mixed" (float32 products, float64 state), and how far apart they end; then how
   the forward step's time grows with each size, replica groups at many nodes, minibatch
   SGD's step against full batch, the lazy kernels of tanh by the grid and by Mehler's series, and
   a small solve's time in a process holding many memory maps (2f);
3. error against cost: the DMFT forward estimator against the ensemble mean of
   8 networks (`networks.train`) with the same total number of units, for the
   linear model (exact answer from the closure) and tanh near-lazy and rich
   (reference: 2^18 nodes); wall times of both, and the efficiency ratio
   (net error^2 x net time) / (DMFT error^2 x DMFT time).

Run: make bench   (or: python scripts/bench_dmft.py --quick; --tables 2d,3 runs those alone)
"""

import argparse
import itertools
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dmft  # noqa: E402
import networks  # noqa: E402
from validation import loglog_fit  # noqa: E402


def matmul_gflops(n=None, reps=5, dtype=None):
    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    # IEEE products in every dtype (a GPU would use TF32 for float32; the solvers do not)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, precision="highest"))
    f(a, a).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        c = f(a, c if _ else a)
    c.block_until_ready()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def gemm_floor(m, p, d, dtype, steps=200):
    """Seconds per step of the forward step's two node GEMMs alone, at its shapes (4 replicas of
    m / 4 nodes: fields z L^T, then the gradient's (M, P) @ (P, r)): what the step would take
    if its elementwise work were free."""
    z = jax.random.normal(jax.random.key(0), (4, m // 4, d), dtype)
    l = (jax.random.normal(jax.random.key(1), (p, d)) / np.sqrt(d)).astype(dtype)
    lt = l.T.copy()

    @jax.jit
    def loop(z):
        def body(_, z):
            h = jnp.matmul(z, lt, precision="highest")
            return z + 1e-3 * jnp.matmul(h, l, precision="highest") / p
        return jax.lax.fori_loop(0, steps, body, z)

    loop(z).block_until_ready()
    t = time.perf_counter()
    loop(z).block_until_ready()
    return (time.perf_counter() - t) / steps


def forward_table(refs, quick):
    """Time per step of the forward solver in both precisions (the difference of runs of 300
    and 100 steps over 200, each the faster of two, so without the records at the two ends; the
    last column is one record's time, from 20 steps saved at every step against saved once); the
    ratio is to the matmul of the dtype its products use (float64 for "full", float32 for
    "mixed"), and to the step's own two GEMMs run alone at its shapes (the ceiling for these
    skinny products)."""
    sizes = [(4096, 64, 16), (8192, 256, 32), (16384, 512, 64)]
    if quick:
        sizes = sizes[:2]
    if jax.default_backend() != "cpu":      # an accelerator: sizes that can fill it
        sizes += [(65536, 512, 64), (262144, 512, 64)]
    rows = []
    for act in ("relu", "tanh"):
        for (m, p, d), prec in itertools.product(sizes, ("full", "mixed")):
            data = dmft.tasks.single_index(D=d, P=p, P_test=0, degree=2, key=jax.random.key(1))
            model = dmft.TwoLayer(act, gamma0=1.0)
            t = time.perf_counter()
            runs = []
            for steps in (100, 300):    # the difference: per step without the two records
                kw = dict(eta0=0.2, steps=steps, save_every=steps, samples=m, replicas=4,
                          method="forward", kernels=False, precision=prec, max_memory_gb=64.0)
                dmft.solve(model, data, **kw)                       # compile
                runs.append(min(dmft.solve(model, data, **kw).info["run_s"] for _ in range(2)))
            per_step = (runs[1] - runs[0]) / 200
            saves = []
            for every in (20, 1):       # the same 20 steps saved once or at every step: 19 records
                kw.update(steps=20, save_every=every)
                dmft.solve(model, data, **kw)                       # compile
                saves.append(min(dmft.solve(model, data, **kw).info["run_s"] for _ in range(2)))
            record = (saves[1] - saves[0]) / 19
            flops = 4 * m * p * d + 6 * m * p                    # GEMMs of one step (C = 1)
            floor = gemm_floor(m, p, d, jnp.float32 if prec == "mixed" else jnp.float64)
            rows.append(dict(activation=act, precision=prec, nodes=m, P=p, D=d, ms_per_step=1e3 * per_step,
                             gflops=flops / per_step / 1e9,
                             ratio=flops / per_step / 1e9 / refs[prec], gemm_ms=1e3 * floor,
                             gemm_ratio=floor / per_step, record_ms=1e3 * record,
                             wall_s=time.perf_counter() - t))
    return rows


def kumar_closure(steps, precision="full"):
    data = dmft.tasks.kumar_quadratic(D=100, P=550, P_test=1000, key=jax.random.key(0))
    model = dmft.TwoLayer(dmft.activations.quadratic(0.02), gamma0=1.0, readout="fixed")
    kw = dict(eta0=2.0, steps=steps, save_every=steps // 100, kernels=False, precision=precision)
    dmft.solve(model, data, **{**kw, "steps": 100, "save_every": 1})   # compile the step
    t = time.perf_counter()
    sol = dmft.solve(model, data, **kw)
    wall = time.perf_counter() - t
    flops = 4 * 550 * 100 * 100 * steps
    return dict(steps=steps, precision=precision, wall_s=wall, run_s=sol.info["run_s"],
                gflops=flops / sol.info["run_s"] / 1e9, final_train=float(sol.train_loss[-1]),
                final_test=float(sol.test_loss[-1]), method=sol.info["method"],
                test_loss=sol.test_loss)


def error_per_cost(quick):
    """RMS error of f_test over all saved times, DMFT estimator against the ensemble mean of
    8 networks (`networks.train`) with the same total number of units."""
    data = dmft.tasks.single_index(D=16, P=64, P_test=256, degree=1, key=jax.random.key(3))
    kw = dict(eta0=0.5, steps=100, save_every=10, kernels=False)
    cases = [("linear", 1.0), ("tanh", 0.3), ("tanh", 1.0)]
    seeds = 3 if quick else 4
    budgets = [4096] if quick else [4096, 16384]
    rows = []
    for act, g in cases:
        model = dmft.TwoLayer(act, gamma0=g)
        if act == "linear":
            exact = dmft.solve(model, data, method="closure", **kw).f_test
        else:   # reference: 2^18 nodes, far below the errors measured here
            exact = dmft.solve(model, data, method="forward", samples=2 ** 18, replicas=1, **kw).f_test
        for total in budgets:
            res = {}
            for name in ("full", "mixed", "networks"):
                errs, times = [], []
                for s in range(seeds):
                    t = time.perf_counter()
                    if name != "networks":
                        f = dmft.solve(model, data, method="forward", key=jax.random.key(100 + s),
                                       samples=total, replicas=4, precision=name, **kw).f_test
                    else:   # ensemble mean of 8 networks of width total / 8
                        f = networks.train(model, data, width=total // 8, seeds=8,
                                           key=jax.random.key(100 + s), **kw).f_test.mean(0)
                    times.append(time.perf_counter() - t)
                    errs.append(np.sqrt(np.mean((f - exact) ** 2)))
                res[name] = (float(np.sqrt(np.mean(np.square(errs)))), float(np.median(times)))
            for prec in ("full", "mixed"):
                rows.append(dict(activation=act, gamma0=g, total_nodes=total, precision=prec,
                                 dmft_err=res[prec][0], net_err=res["networks"][0],
                                 err_ratio=res["networks"][0] / res[prec][0],
                                 dmft_s=res[prec][1], net_s=res["networks"][1]))
    return rows


def scaling_table(quick):
    """Forward solver (tanh, gamma0 = 1, kernels off): seconds per step as one size grows from
    a base (P = 128, D = 32, 4096 nodes, 100 steps); the fitted exponent of time per step against
    each size (against steps it is ~0 when the run's time is linear in its steps)."""
    base = dict(P=128, D=32, samples=4096, steps=100)
    grow = {"P": [64, 128, 256, 512], "D": [8, 32, 128], "samples": [2048, 4096, 8192, 16384],
            "steps": [50, 100, 200, 400]}
    if quick:
        grow = {k: v[:3] for k, v in grow.items()}
    rows = []
    for name, values in grow.items():
        per_step = []
        for v in values:
            size = {**base, name: v}
            data = dmft.tasks.single_index(D=size["D"], P=size["P"], P_test=0, degree=2, key=jax.random.key(1))
            kw = dict(eta0=0.2, steps=size["steps"], save_every=size["steps"], samples=size["samples"],
                      replicas=4, method="forward", kernels=False)
            model = dmft.TwoLayer("tanh", gamma0=1.0)
            dmft.solve(model, data, **kw)
            per_step.append(dmft.solve(model, data, **kw).info["run_s"] / size["steps"])
        fit = loglog_fit(np.array(values, float), np.array(per_step))
        rows.append(dict(size=name, values=values, ms_per_step=[1e3 * x for x in per_step],
                         exponent=fit.slope, exponent_se=fit.stderr))
    return rows


def group_table(quick):
    """Large sample counts on a CPU: the forward step with every replica vmapped at once against
    the default plan, which integrates groups of replicas whose fields fit
    `dmft.plan.CPU_GROUP_ELEMENTS` one after another (the same answer to rounding: each group
    width is its own compiled program)."""
    if jax.default_backend() != "cpu":
        return []
    cases = [("relu", 256, 32, 1000, 65536, 4), ("tanh", 512, 64, 0, 65536, 16)]
    rows = []
    for act, p, d, pt, m, reps in cases[:1] if quick else cases:
        data = dmft.tasks.single_index(D=d, P=p, P_test=pt, degree=2, key=jax.random.key(1))
        model = dmft.TwoLayer(act, gamma0=1.0)
        row = dict(activation=act, P=p, D=d, nodes=m, replicas=reps)
        for name, cap in (("at_once", 2 ** 62), ("grouped", dmft.plan.CPU_GROUP_ELEMENTS)):
            saved, dmft.plan.CPU_GROUP_ELEMENTS = dmft.plan.CPU_GROUP_ELEMENTS, cap
            try:
                runs = []
                for steps in (50, 150):
                    kw = dict(eta0=0.2, steps=steps, save_every=steps, samples=m, replicas=reps,
                              method="forward", kernels=False, precision="mixed", max_memory_gb=64.0)
                    dmft.solve(model, data, **kw)
                    sol = dmft.solve(model, data, **kw)
                    runs.append(sol.info["run_s"])
                row[name + "_ms"] = 1e3 * (runs[1] - runs[0]) / 100
                row[name + "_group"] = sol.info["replicas_at_once"]
            finally:
                dmft.plan.CPU_GROUP_ELEMENTS = saved
        rows.append(row)
    return rows


def sgd_table(quick):
    """Minibatch SGD through the forward solver against full-batch descent (kernels off): a step
    computes on its B points alone (fields, errors, the control variate's rows; with C > 1 outputs
    the operator control variate's contractions of S are carried and moved on the batch), so its
    cost falls with B; the records (every point) are excluded as above. Two problems: a
    single-index target (relu, gamma0 = 1, C = 1, 4 replicas) and modular addition (tanh,
    gamma0 = 3, one-hot pairs, C = p, 2 replicas)."""
    P, D, m = (256, 32, 8192) if quick else (512, 32, 16384)
    problems = [("single_index", dmft.tasks.single_index(D=D, P=P, P_test=0, degree=2, key=jax.random.key(1)),
                 dmft.TwoLayer("relu", gamma0=1.0), m, 4),
                ("modular_addition", dmft.tasks.modular_addition(17 if quick else 23, 0.9, key=0),
                 dmft.TwoLayer("tanh", gamma0=3.0), 2048, 2)]
    rows = []
    for name, data, model, nodes, reps in problems:
        first = len(rows)
        for B in (data.P, data.P // 4, 16, 4):                           # B = P: full batch
            runs = []
            for steps in (100, 300):
                kw = dict(eta0=0.2 if name == "single_index" else 0.05, steps=steps, save_every=steps,
                          samples=nodes, replicas=reps, method="forward", kernels=False,
                          **({} if B == data.P else dict(batch_size=B, batch_key=jax.random.key(2))))
                dmft.solve(model, data, **kw)
                runs.append(min(dmft.solve(model, data, **kw).info["run_s"] for _ in range(2)))
            rows.append(dict(problem=name, P=data.P, D=data.D, C=data.C, nodes=nodes, batch=B,
                             ms_per_step=1e3 * (runs[1] - runs[0]) / 200))
        for r in rows[first:]:
            r["vs_full"] = r["ms_per_step"] / rows[first]["ms_per_step"]
    return rows


def kernel_setup_table(quick):
    """The lazy kernels of an activation without a closed form (tanh; P train and P* test points
    against the P train ones, single-index inputs of unit variance): the grid alone as a compiled
    program computes them (`dmft.kernels.lazy_kernels` traced: every entry on its trapezoid grid)
    against the concrete path the solvers now take (Mehler's series, the one-dimensional rule at
    rho = +-1, the grid for the rest); both warm, and how far apart they are."""
    from dmft import kernels
    from dmft.activations import grid_nodes, tanh
    rows = []
    for P, PT in ((64, 256), (256, 1000), (1024, 1000)) if not quick else ((64, 256), (128, 500)):
        data = dmft.tasks.single_index(D=32, P=P, P_test=PT, key=jax.random.key(3))
        x = np.concatenate([np.asarray(data.x_train), np.asarray(data.x_test)])
        kx = x @ x[:P].T / data.D
        d = np.sum(x * x, axis=1) / data.D
        nodes = grid_nodes(float(d.max()), 48)
        act = tanh()
        grid_fn = jax.jit(lambda kx, d: kernels.lazy_kernels(act, kx, d, d[:P], nodes=nodes))
        out = {}
        for name, fn in (("grid", lambda: grid_fn(kx, d)),
                         ("series", lambda: kernels.lazy_kernels(act, kx, d, d[:P], nodes=nodes))):
            jax.block_until_ready(fn())
            t = time.perf_counter()
            vals = jax.block_until_ready(fn())
            out[name] = (time.perf_counter() - t, [np.asarray(v) for v in vals])
        rows.append(dict(P=P, P_test=PT, nodes=nodes, grid_s=out["grid"][0], series_s=out["series"][0],
                         max_diff=max(float(np.max(np.abs(a - b))) for a, b in zip(out["grid"][1], out["series"][1]))))
    return rows


def call_overhead_table(quick):
    """A small solve's wall time (tanh, D = 4, P = 24, 64 nodes, 40 steps) in a process holding
    many memory maps (as a long test worker or notebook does: anonymous maps stand in for compiled
    programs' code), with the maps counted before every call (MAPS_RECHECK_S = 0) and as the solvers
    count them (after a compile, a drop, or MAPS_RECHECK_S). Changes no number."""
    import mmap

    from dmft import runner
    data = dmft.tasks.single_index(D=4, P=24, P_test=16, degree=2, key=jax.random.key(1))
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    solve = lambda k: dmft.solve(model, data, method="forward", samples=64, replicas=2, eta0=0.5, steps=40,  # noqa: E731
                                 save_every=40, key=jax.random.key(k), kernels=False).test_loss
    jax.block_until_ready(solve(0))
    calls, rows, default = 20 if quick else 40, [], runner.MAPS_RECHECK_S
    for extra in (0, 28000):
        held = [mmap.mmap(-1, 8192, prot=mmap.PROT_READ | (mmap.PROT_WRITE if i % 2 else 0)) for i in range(extra)]
        row = {"maps": runner.memory_maps()[0]}
        for name, recheck in (("every_call", 0.0), ("watched", default)):
            runner.MAPS_RECHECK_S = recheck
            t = time.perf_counter()
            for k in range(calls):
                jax.block_until_ready(solve(k + 1))
            row[name + "_ms"] = (time.perf_counter() - t) / calls * 1e3
        runner.MAPS_RECHECK_S = default
        for m in held:
            m.close()
        rows.append(row)
    return rows


TABLES = ("1", "2", "2b", "2c", "2d", "2e", "2f", "3")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes, 2e4 Kumar steps")
    p.add_argument("--kumar-steps", type=int, default=None)
    p.add_argument("--json", help="also write the tables to this file")
    p.add_argument("--tables", default=",".join(TABLES),
                   help=f"the tables to run, comma-separated, of {', '.join(TABLES)} (default: all; a short "
                        "lease of an accelerator can run the rest another time)")
    args = p.parse_args()
    run = set(args.tables.split(","))
    if not run <= set(TABLES):
        p.error(f"--tables: unknown {sorted(run - set(TABLES))}; known: {', '.join(TABLES)}")
    fw = kumar = sc = gt = sg = ec = []
    rel = None
    ref = matmul_gflops()
    ref32 = matmul_gflops(dtype=jnp.float32)
    print(f"device: {jax.devices()[0]}   matmul {2048 if jax.default_backend() == 'cpu' else 8192}^3: float64 {ref:.1f} GFLOP/s, "
          f"float32 {ref32:.1f} GFLOP/s\n")

    if "1" in run:
        print("1. forward solver hot loop (gradient descent, 4 replicas, kernels off; mixed: float32 "
              "products, ratio to the float32 matmul)")
        print(f"{'act':>8} {'precision':>9} {'nodes':>7} {'P':>5} {'D':>4} {'ms/step':>9} {'GFLOP/s':>9} "
              f"{'vs matmul':>10} {'GEMMs ms':>9} {'vs GEMMs':>9} {'record ms':>10}")
        fw = forward_table({"full": ref, "mixed": ref32}, args.quick)
        for r in fw:
            print(f"{r['activation']:>8} {r['precision']:>9} {r['nodes']:7d} {r['P']:5d} {r['D']:4d} "
                  f"{r['ms_per_step']:9.3f} {r['gflops']:9.1f} {r['ratio']:10.0%} {r['gemm_ms']:9.3f} "
                  f"{r['gemm_ratio']:9.0%} {r['record_ms']:10.1f}")
        print("   ms/step: (run of 300 steps - run of 100) / 200, records excluded; GEMMs ms: the step's\n"
              "   two node GEMMs alone at its shapes; vs GEMMs: that time over the step's (100% = the\n"
              "   elementwise work costs nothing beside the products); record ms: one save (fields,\n"
              "   the (P, P) kernels for the alignment): 20 steps saved at every step - saved once, / 19")

    if "2" in run:
        steps = args.kumar_steps or (20000 if args.quick else 100000)
        print(f"\n2. Kumar et al. Fig. 1 setting through the closure ({steps} steps, D=100, P=550)")
        kumar = [kumar_closure(steps, prec) for prec in ("full", "mixed")]
        for k in kumar:
            print(f"   {k['precision']:>5}: {k['wall_s']:.1f} s wall ({k['run_s']:.1f} s in the scan), "
                  f"{k['gflops']:.1f} GFLOP/s = {k['gflops'] / ref:.0%} of the float64 matmul; final train "
                  f"{k['final_train']:.6e}, test {k['final_test']:.6e}; 1e5 steps: {k['run_s'] * 1e5 / steps:.0f} s")
        rel = float(np.max(np.abs(kumar[1]["test_loss"] / kumar[0]["test_loss"] - 1)))
        print(f"   mixed against full: largest relative difference of the test loss over time {rel:.1e}")
        for k in kumar:
            k.pop("test_loss")

    if "2b" in run:
        print("\n2b. how the forward solver's time per step grows (tanh, base P=128, D=32, 4096 nodes, 100 steps;"
              " one size varied; 1 = linear)")
        sc = scaling_table(args.quick)
        for r in sc:
            print(f"   {r['size']:>8}: " + ", ".join(f"{v}: {m:.2f} ms" for v, m in zip(r['values'], r['ms_per_step']))
                  + f"   exponent {r['exponent']:.2f} +- {r['exponent_se']:.2f}")
        print("   (against steps, ~0 = the run's time linear in steps.) The products cost nodes x P x D: flops\n"
              "   alone would give exponent 1 in each; an exponent in D well below 1 means the (nodes, P)\n"
              "   elementwise passes, which do not grow with D, bind: memory traffic, not flops")

    gt = group_table(args.quick) if "2c" in run else []
    if gt:
        print("\n2c. many nodes on a CPU: every replica at once against groups of replicas whose fields\n"
              "    (nodes x P) fit CPU_GROUP_ELEMENTS, run one after another (the default; same answer)")
        for r in gt:
            print(f"   {r['activation']} P={r['P']} D={r['D']} {r['nodes']} nodes in {r['replicas']} replicas, "
                  f"mixed: at once {r['at_once_ms']:.1f} ms/step; {r['grouped_group']} at a time "
                  f"{r['grouped_ms']:.1f} ms/step ({r['at_once_ms'] / r['grouped_ms']:.2f}x)")

    if "2d" in run:
        sg = sgd_table(args.quick)
        print("\n2d. minibatch SGD through the forward solver against full batch (ms/step as in 1.)")
        for r in sg:
            print(f"   {r['problem']:>16} P={r['P']} D={r['D']} C={r['C']} {r['nodes']} nodes: batch {r['batch']:5d}: "
                  f"{r['ms_per_step']:7.3f} ms/step, {r['vs_full']:.2f} of full batch")

    ks = kernel_setup_table(args.quick) if "2e" in run else []
    if ks:
        print("\n2e. lazy kernels without a closed form (tanh, (P + P*) x P, unit-variance inputs): the grid\n"
              "    on every entry against Mehler's series (the solvers' setup on concrete inputs)")
        for r in ks:
            print(f"   P={r['P']} P*={r['P_test']}: grid ({r['nodes']}x{r['nodes']} nodes) {r['grid_s']:.2f} s, "
                  f"series {r['series_s']:.3f} s ({r['grid_s'] / r['series_s']:.0f}x); largest difference "
                  f"{r['max_diff']:.1e} (the grid's own error at its nodes)")

    co = call_overhead_table(args.quick) if "2f" in run else []
    if co:
        print("\n2f. a small solve's wall time (tanh, P = 24, 64 nodes, 40 steps) as the process's memory maps\n"
              "    grow: the maps counted before every call against counted only after a compile or a second")
        for r in co:
            print(f"   {r['maps']:6d} maps: every call {r['every_call_ms']:6.1f} ms, watched {r['watched_ms']:6.1f} ms "
                  f"({r['every_call_ms'] / r['watched_ms']:.1f}x)")

    if "3" in run:
        print("\n3. error against cost: DMFT estimator vs mean of 8 networks, equal total units")
        print(f"{'model':>20} {'nodes':>7} {'dmft rmse':>11} {'net rmse':>11} {'err ratio':>10} "
              f"{'time ratio':>11} {'dmft s':>8} {'net s':>8} {'efficiency':>11}")
        ec = error_per_cost(args.quick)
        for r in ec:
            label = f"{r['activation']} g={r['gamma0']:g} {r['precision']}"
            print(f"{label:>20} {r['total_nodes']:7d} {r['dmft_err']:11.2e} {r['net_err']:11.2e} "
                  f"{r['err_ratio']:10.1f} {r['err_ratio'] ** 2:11.0f} {r['dmft_s']:8.2f} {r['net_s']:8.2f} "
                  f"{r['err_ratio'] ** 2 * r['net_s'] / r['dmft_s']:11.1f}")
        print("   time ratio: compute networks need for the DMFT's error (errors fall as nodes^-1/2);\n"
              "   efficiency: (net error^2 x net s) / (DMFT error^2 x DMFT s), wall clock per solve")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"matmul_gflops": ref, "matmul_gflops_float32": ref32, "forward": fw, "kumar": kumar, "kumar_mixed_rel_diff": rel,
                       "scaling": sc, "groups": gt, "sgd": sg, "kernel_setup": ks, "call_overhead": co,
                       "error_per_cost": ec}, fh, indent=2)


if __name__ == "__main__":
    main()
