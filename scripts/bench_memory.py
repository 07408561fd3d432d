"""Memory estimates against measured peak memory, for every kind of program.

Each program runs in a fresh process; its peak resident memory above the process's
resident memory just before the call (JAX initialized, the problem built) is compared
with the estimate the library uses to refuse programs before they start
(`dmft.plan_solve(...).memory_bytes`, `networks.train`'s, `dmft.BatchProgram`'s, the deep
linear networks'). The ratio estimate / measured must never be below 1. For sampled
solves it also prints how many replicas were integrated at once and the call's seconds
(compilation included): the pair "8 replicas at once" / "streamed" is the same solve under
a large and a small max_memory_gb.

    python scripts/bench_memory.py            # every program (a few minutes)
    python scripts/bench_memory.py --quick    # the small ones
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r'''
import json, resource, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import dmft, networks

spec = json.loads(sys.argv[1])

def rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0

kind = spec["kind"]
extra = {}
if kind == "dln":
    data = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0, 1.0, 0.5], P=spec["P"], label_noise=1.0, key=0)
    model = dmft.DeepLinear(4, 10, 0.3, "aligned")
    sch = dmft.Schedule(0.01, spec["steps"], spec["save_every"], batch_size=1)
    from networks.deep_linear import memory_estimate
    est = memory_estimate(model, data, spec["seeds"], sch.save_steps.size, 512)
    jax.block_until_ready(jax.numpy.ones(1))
    base = rss()
    networks.train(model, data, seeds=spec["seeds"], schedule=sch)
else:
    data = dmft.tasks.single_index(D=spec["D"], P=spec["P"], P_test=spec["P_test"], degree=2, key=0)
    if spec.get("outputs", 1) > 1:          # C outputs: the target and C - 1 of its rescaled copies
        C = spec["outputs"]
        scale = np.linspace(1.0, 0.5, C)
        data = dmft.Dataset(data.x_train, np.outer(data.y_train, scale), data.x_test,
                            None if data.y_test is None else np.outer(data.y_test, scale))
    act = spec.get("activation", "tanh")
    model = (dmft.TwoLayer(dmft.activations.quadratic(0.1), gamma0=1.0, readout="fixed") if act == "quadratic"
             else dmft.TwoLayer(act, gamma0=spec.get("gamma0", 1.0)))
    sch = dmft.Schedule(0.5, spec["steps"], spec["save_every"], batch_size=spec.get("batch_size"))
    if kind == "solve":
        opts = dict(method=spec["method"], samples=spec.get("samples", 4096), kernels=spec["kernels"],
                    replicas=spec.get("replicas", 4), max_memory_gb=spec.get("max_memory_gb", 1000.0),
                    sampler=spec.get("sampler", "stratified"),
                    neuron_measures=(lambda w, w0: jax.numpy.outer(w, w0).reshape(-1)) if spec.get("measure") else None)
        for name in ("precision", "node_split", "control_variate"):
            if name in spec:
                opts[name] = spec[name]
        plan = dmft.plan_solve(model, data, sch, **opts)
        est, extra = plan.memory_bytes, {"replicas_at_once": plan.replicas_at_once}
        jax.block_until_ready(jax.numpy.ones(1))
        base = rss()
        t0 = time.perf_counter()
        dmft.solve(model, data, sch, **opts,
                   **({"batch_key": jax.random.key(1)} if spec.get("batch_size") else {}))
        extra["seconds"] = time.perf_counter() - t0
    elif kind == "networks":
        meas = (lambda w, w0: jax.numpy.outer(w, w0).reshape(-1)) if spec.get("measure") else None
        plan = networks.plan_train(model, data, sch, spec["width"], spec["seeds"], kernels=spec["kernels"],
                                   max_memory_gb=1000.0, neuron_measures=meas)
        from networks.train import memory_estimate
        K = dmft.checks.measure_size(meas, data.D) if meas is not None else 0
        est = memory_estimate(data, spec["width"], spec["seeds"], sch.save_steps.size, spec["kernels"], K)
        jax.block_until_ready(jax.numpy.ones(1))
        base = rss()
        networks.train(model, data, schedule=sch, width=spec["width"], seeds=spec["seeds"], kernels=spec["kernels"],
                       max_memory_gb=1000.0, neuron_measures=meas)
    elif kind == "batch":
        fields = tuple(spec.get("fields", ["gamma0"]))
        prog = dmft.BatchProgram(model, data, schedule=sch, fields=fields, method=spec["method"],
                                 samples=spec.get("samples", 1024), max_memory_gb=1000.0)
        n = spec["points"]
        grid = {"gamma0": np.linspace(0.5, 2, n), "eps": np.linspace(0.05, 0.2, n)}
        if spec.get("batch_size"):          # solve_batch: one batch at a time, every point's results kept
            bs = spec["batch_size"]
            prog = dmft.BatchProgram(model, data, schedule=sch, fields=fields, method=spec["method"],
                                     samples=spec.get("samples", 1024), max_memory_gb=1000.0, curves=True)
            est = prog.memory_estimate(bs) + 2 * prog.result_bytes(n)
            jax.block_until_ready(jax.numpy.ones(1))
            base = rss()
            dmft.solve_batch(model, data, {f: grid[f] for f in fields}, schedule=sch, batch_size=bs,
                             method=spec["method"], samples=spec.get("samples", 1024), curves=True,
                             max_memory_gb=1000.0)
        else:
            est = prog.memory_estimate(n)
            jax.block_until_ready(jax.numpy.ones(1))
            base = rss()
            prog({f: grid[f] for f in fields}, np.arange(n))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"estimate": est, "measured": max(peak - base, 1), **extra}))
'''

PROGRAMS = [
    ("solve forward kernels", dict(kind="solve", method="forward", kernels=True, D=32, P=400, P_test=200,
                                   steps=200, save_every=10), True),
    ("solve forward no kernels", dict(kind="solve", method="forward", kernels=False, D=32, P=400, P_test=200,
                                      steps=200, save_every=10), True),
    ("solve forward large P", dict(kind="solve", method="forward", kernels=True, D=32, P=1000, P_test=500,
                                   steps=100, save_every=10), False),
    ("solve forward many nodes", dict(kind="solve", method="forward", kernels=False, D=64, P=500, P_test=500,
                                      steps=40, save_every=10, samples=65536), False),
    ("solve 8 replicas at once", dict(kind="solve", method="forward", kernels=False, D=64, P=500, P_test=500,
                                      steps=40, save_every=10, samples=131072, replicas=8), False),
    ("solve 8 replicas streamed", dict(kind="solve", method="forward", kernels=False, D=64, P=500, P_test=500,
                                       steps=40, save_every=10, samples=131072, replicas=8,
                                       max_memory_gb=1.5), False),
    ("solve sobol streamed", dict(kind="solve", method="forward", kernels=False, D=400, P=100, P_test=100,
                                  steps=40, save_every=10, samples=2 ** 18, replicas=16, sampler="sobol",
                                  max_memory_gb=1.8), False),
    ("solve demo's sizes", dict(kind="solve", method="forward", kernels=True, activation="relu", D=32, P=256,
                                P_test=1000, steps=600, save_every=20, samples=32768, replicas=8,
                                precision="mixed", max_memory_gb=4.0), False),
    ("solve node_split 4, no cv", dict(kind="solve", method="forward", kernels=True, activation="relu", D=32,
                                       P=256, P_test=1000, steps=200, save_every=20, samples=16384, replicas=8,
                                       precision="mixed", node_split=4, control_variate=False), False),
    ("solve SGD", dict(kind="solve", method="forward", kernels=True, activation="relu", D=16, P=128, P_test=256,
                       steps=200, save_every=10, batch_size=32), True),
    ("solve 3 outputs", dict(kind="solve", method="forward", kernels=True, D=16, P=128, P_test=256, steps=100,
                             save_every=10, outputs=3), True),
    ("solve lazy huge D", dict(kind="solve", method="lazy", kernels=True, D=200000, P=100, P_test=100,
                               steps=10, save_every=10), False),
    ("solve measures K = D^2", dict(kind="solve", method="forward", kernels=False, D=96, P=64, P_test=64,
                                    steps=10, save_every=10, samples=16384, measure=True), False),
    ("solve iterate", dict(kind="solve", method="iterate", kernels=True, D=16, P=200, P_test=100,
                           steps=200, save_every=10, samples=2048), True),
    ("solve lazy large P", dict(kind="solve", method="lazy", kernels=True, D=32, P=2000, P_test=1000,
                                steps=100, save_every=10), False),
    ("solve closure", dict(kind="solve", method="closure", activation="linear", kernels=True, D=64, P=500,
                           P_test=500, steps=200, save_every=10), True),
    ("networks kernels", dict(kind="networks", kernels=True, D=32, P=300, P_test=200, steps=100, save_every=10,
                              width=256, seeds=8), True),
    ("networks measures K = D^2", dict(kind="networks", kernels=False, D=96, P=200, P_test=100, steps=1000,
                                       save_every=1, width=64, seeds=16, measure=True), False),
    ("networks large P", dict(kind="networks", kernels=False, D=32, P=4000, P_test=2000, steps=20,
                              save_every=10, width=1024, seeds=4), False),
    ("batch forward", dict(kind="batch", method="forward", D=16, P=200, P_test=100, steps=100, save_every=10,
                           points=16, samples=2048), True),
    ("batch lazy", dict(kind="batch", method="lazy", D=32, P=1000, P_test=500, steps=100, save_every=10,
                        points=8), False),
    ("batch lazy 32 points", dict(kind="batch", method="lazy", D=32, P=1000, P_test=500, steps=100,
                                  save_every=10, points=32), False),
    ("batch closure", dict(kind="batch", method="closure", activation="linear", D=32, P=1000, P_test=500,
                           steps=100, save_every=10, points=16), False),
    ("batch closure large P", dict(kind="batch", method="closure", activation="linear", D=32, P=3000,
                                   P_test=1500, steps=200, save_every=10, points=16), False),
    ("batch closure over eps", dict(kind="batch", method="closure", activation="quadratic", D=32, P=1000,
                                    P_test=500, steps=100, save_every=10, points=16,
                                    fields=["gamma0", "eps"]), False),
    ("closure many saves", dict(kind="solve", method="closure", activation="linear", kernels=False, D=1000,
                                P=1000, P_test=500, steps=200, save_every=1), False),
    ("solve_batch lazy curves", dict(kind="batch", method="lazy", D=32, P=1000, P_test=2000, steps=100,
                                     save_every=1, points=256, batch_size=16), False),
    ("deep linear", dict(kind="dln", P=20, steps=2000, save_every=10, seeds=2048), True),
]


def measure(spec):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                       env=env, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    args = p.parse_args()
    rows = []
    print(f"{'program':<28} {'estimate MiB':>13} {'measured MiB':>13} {'ratio':>7}")
    for name, spec, quick in PROGRAMS:
        if args.quick and not quick:
            continue
        m = measure(spec)
        ratio = m["estimate"] / m["measured"]
        rows.append({"program": name, **m, "ratio": ratio, "spec": spec})
        print(f"{name:<28} {m['estimate'] / 2**20:>13.1f} {m['measured'] / 2**20:>13.1f} {ratio:>7.2f}"
              + (f"   ({m['replicas_at_once']} replicas at a time, {m['seconds']:.1f} s)"
                 if "replicas_at_once" in m else "")
              + ("   <-- BELOW 1" if ratio < 1 else ""))
    print(f"\nsmallest ratio: {min(r['ratio'] for r in rows):.2f} (must be >= 1)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
