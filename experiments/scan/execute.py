"""Running a scan: groups built once, chunks computed on sharded devices and processes,
written to a `experiments.store.Store` as they finish.

Under `jax.distributed` each process takes every count-th chunk and process 0 writes
them all (the chunks travel through JAX's collectives; on CPU, gloo).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import itertools
import json
import os
import re
import sys
import time

import numpy as np

import dmft
from dmft.errors import ConfigError, MemoryLimitError, StoreConflict, StoreWriteError
from dmft.io import environment
from dmft.plan import sampled_min_gamma0
from dmft.runner import drop_compiled_if_crowded
from dmft.schedule import check_decay, final_time_counts
from validation.sweep import NODE_FRACTIONS

from .. import problem as _problem
from ..store import Store, npz_arrays, npz_bytes, text_bytes
from .config import check_gamma0, load_config
from .deep_linear import DeepLinearGroup
from .schema import BATCHED, SETTINGS, kind_of
from .grid import Chunk, Group, PartCache, Plan, plan, point_digests, point_ids, point_warnings, point_where
from .outputs import derive, network_records, node_outputs
from .result import REPORT, load, report_text, write_report

__all__ = ["run", "init_distributed", "check_port_free", "store_identity", "SETTINGS", "ProcessLost",
           "HANG_TIMEOUT"]


class ProcessLost(RuntimeError):
    """A collective between the scan's processes failed: one of them stopped (killed, crashed).
    Finished chunks are kept; every process started again with the same command resumes.

    `result` is the complete scan's `ScanResult` (report written) where process 0 lost a process
    only in the scan's last synchronisation, after every chunk and the manifest were written: the
    results are complete then, and this says so (None otherwise)."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


HANG_TIMEOUT = 60.0     # seconds without a sign of life from a process before the others end
EXIT_LOST = 6           # the command's exit status for a lost process (experiments.cli.EXIT_LOST)
_RUNS = itertools.count()       # each multi-process run's own keys in JAX's key-value store


class _Watchdog:
    """Tells a stopped or hung process from a slow one: every process signs its life in JAX's
    distributed key-value store every `interval` seconds, from a thread (JAX's compiles and
    computations release Python's lock, so a process busy with however long a chunk still signs),
    and ends itself (`on_hang`, which does not return) when another process has not signed for
    `timeout` seconds. A collective waits for a stopped process (SIGSTOP, a paused VM) until JAX's
    own heartbeat aborts every process (~100 s by default: SIGABRT, its messages), and without end
    for a hung one whose JAX threads still beat (holding Python's lock: this thread cannot sign)."""

    def __init__(self, comm: "_Comm", timeout: float, on_hang):
        import threading

        from jax._src import distributed   # (JAX's client of its key-value store: no public handle)

        self.client = distributed.global_state.client
        self.comm, self.timeout, self.on_hang = comm, float(timeout), on_hang
        self.interval = min(max(self.timeout / 8, 0.1), 5.0)
        self.prefix = f"dmft_scan/{next(_RUNS)}/alive/"
        now = time.monotonic()
        self.seen = dict.fromkeys(range(comm.count), now)     # a process's last new sign, as we saw it
        self.last = {}
        self.answered = now                                   # the store's last answer
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=f, name=f"dmft-scan-{f.__name__.strip('_')}", daemon=True)
                        for f in (self._beat, self._check)]
        for t in self.threads:
            t.start()

    @classmethod
    def start(cls, comm: "_Comm", timeout: float, on_hang):
        """A watchdog where there are other processes and JAX's store can be reached (else None)."""
        if comm.count == 1:
            return None
        try:
            return cls(comm, timeout, on_hang)
        except (ImportError, AttributeError):       # (another JAX: no watchdog, as before)
            return None

    def stop(self) -> None:
        self.stopped.set()

    def _beat(self) -> None:
        n = 0
        while not self.stopped.is_set():
            try:
                self.client.key_value_set(f"{self.prefix}{self.comm.index}", str(n), allow_overwrite=True)
                got = self.client.key_value_dir_get(self.prefix)
            except Exception:      # noqa: BLE001 - the store did not answer: judged by `_check`
                got = None
            if got is not None:
                now = time.monotonic()
                self.answered = now
                for key, value in got:
                    i = int(key.rpartition("/")[2])
                    if self.last.get(i) != value:
                        self.last[i], self.seen[i] = value, now
            n += 1
            self.stopped.wait(self.interval)

    def _check(self) -> None:
        before = time.monotonic()
        while not self.stopped.wait(self.interval):
            now = time.monotonic()
            if now - before > self.timeout / 2:      # this process was itself stopped: look again first
                self.seen = dict.fromkeys(self.seen, now)
                self.answered = now
            before = now
            silent = [i for i, t in self.seen.items() if i != self.comm.index and now - t > self.timeout]
            if now - self.answered > self.timeout and self.comm.index != 0:
                silent = [0]          # the store is process 0's: it does not answer
            if silent and not self.stopped.is_set():
                self.on_hang(silent)


# ----------------------------------------------------------------- groups at run time

def _error_class(kind: str):
    return {"StoreConflict": StoreConflict, "ConfigError": ConfigError, "ValueError": ValueError,
            "DivergenceError": dmft.DivergenceError, "NotConverged": dmft.NotConverged,
            "FloatingPointError": FloatingPointError}.get(kind, RuntimeError)


def _flagged(idx, rec: dict) -> np.ndarray:
    """The grid points of a theory call (`idx`) that its control-variate flags mark."""
    marks = np.zeros(len(idx), bool)
    for q in ("control_variate_noisy", "control_variate_off"):
        if q in rec:
            marks |= np.asarray(rec[q], bool)[:len(idx)]
    return np.asarray(idx)[marks]


class _Comm:
    """This process's place among the processes of `jax.distributed` (one process: no-op)."""

    def __init__(self):
        import jax

        self.count, self.index = jax.process_count(), jax.process_index()
        if self.count > 1:     # (JAX's collectives failed on it: "cannot reshape array of size 5 into shape (2,4)")
            per = [sum(d.process_index == i for d in jax.devices()) for i in range(self.count)]
            if len(set(per)) > 1:
                raise ConfigError(f"the processes of this scan have different numbers of devices ({per}, by "
                                  "process); give every process the same (XLA_FLAGS, CUDA_VISIBLE_DEVICES)")

    def allgather(self, blob: bytes) -> list[bytes]:
        """Every process's bytes, on every process (through JAX's collectives)."""
        if self.count == 1:
            return [blob]
        from jax.experimental import multihost_utils

        with self.lost():
            n = np.asarray(multihost_utils.process_allgather(np.array([len(blob)], np.int32))).reshape(-1)
            buf = np.zeros(max(int(n.max()), 1), np.uint8)
            buf[:len(blob)] = np.frombuffer(blob, np.uint8)
            got = np.asarray(multihost_utils.process_allgather(buf)).reshape(self.count, -1)
        return [got[i, :n[i]].tobytes() for i in range(self.count)]

    @contextlib.contextmanager
    def lost(self):
        """A failed collective as `ProcessLost` (gloo's error for a process that died, a dropped
        connection, came as a ValueError, which the command reported as a configuration error)."""
        from jax.errors import JaxRuntimeError

        try:
            yield
        except Exception as err:    # noqa: BLE001 - the runtime's failures (others are raised as they are)
            if not (isinstance(err, JaxRuntimeError) or re.match(r"[A-Z_]+: ", str(err))):
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ProcessLost(f"process {self.index} of {self.count} lost contact with the scan's other processes "
                              f"({first}): one of them stopped (killed or crashed; its own output says "
                              "why)") from err

    def agree(self, fn, first_only: bool = False):
        """Run fn (on process 0 alone with first_only) and share the outcome: every process
        returns process 0's JSON-able result, or raises when fn raised on any process."""
        if self.count == 1:
            return fn()
        result, error = None, None
        if self.index == 0 or not first_only:
            try:
                result = fn()
            except Exception as err:    # noqa: BLE001 - re-raised below, on every process
                error = err
        mine = {"result": result} if error is None else {
            "kind": type(error).__name__, "message": str(error), "errno": getattr(error, "errno", None)}
        got = [json.loads(b) for b in self.allgather(json.dumps(mine).encode())]
        if error is not None:
            raise error
        for i, g in enumerate(got):
            if "kind" in g:
                if g["kind"] == "StoreWriteError":
                    raise StoreWriteError(g["errno"], g["message"])
                raise _error_class(g["kind"])(f"(process {i}) {g['message']}")
        return got[0]["result"]


class _GroupRun:
    """Data, model and program of one group (built, hence validated, on construction)."""

    def __init__(self, cfg: dict, group: Group, columns: dict, sharding, n_devices: int, caches: dict,
                 interruptible: bool = False):
        import jax

        self.cfg, self.group, self.columns, self.sharding = cfg, group, columns, sharding
        self.caches = caches
        sc, th, sim = cfg["scan"], cfg["theory"], cfg["simulate"]
        self.data = _problem.build_data(cfg["task"])
        self.model = _problem.build_model(cfg["model"])
        self.schedule = _problem.build_schedule(cfg["train"], self.data.P)
        # minibatch SGD: one batch sequence for every point's theory and networks (None: full batch)
        self.batch_key = _problem.batch_key(cfg["train"], self.data.P)
        if cfg["task"]["name"] == "npz":          # a data file's P is known only now: the jobs' checks
            _problem.check_batches(cfg, self.data.P)
            if sc["theory"]:      # (a file too large was refused naming train.save_every, theory.samples...)
                _problem.check_data_size(cfg, self.data)
        self.n_program = -(-min(sc["chunk"], len(group.indices)) // n_devices) * n_devices
        # the batched fields the grid sets (a program batches at least one: gamma0 then)
        self.batched = {BATCHED[f]: f for f in columns if f in BATCHED}
        if "weight_decay" in self.batched and not np.any(columns["train.weight_decay"][group.indices]):
            # a group without decay (`grid.plan` puts those apart) is solved as dmft.solve solves
            # it, with the control variate a batched decay turns off for every point
            del self.batched["weight_decay"]
            self.schedule = self.schedule.replace(weight_decay=0.0)
        self.batched = self.batched or {"gamma0": None}
        self.prog = None
        if sc["theory"]:
            final_time = cfg["train"].get("final_time", 0.0) or None
            self.fewer = {}
            try:
                self.prog = dmft.BatchProgram(
                    self.model, self.data, schedule=self.schedule, fields=tuple(self.batched),
                    curves="predictions" in sc["outputs"], final_time=final_time, interruptible=interruptible,
                    **_problem.solve_options(th))
                self.prog.check_memory(self.n_program, self.prog.max_memory_gb)   # a whole chunk, before compute
                # scan.node_check: the same points with each replica's nodes split in 2 and 4 (half and a
                # quarter of the nodes a replica, the same nodes; each population its own matrices: a
                # chunk of them is checked too)
                if sc["node_check"]:
                    if not self.prog.plan.sampled or self.prog.plan.sampler == "quadrature":
                        raise dmft.InputError(f"scan.node_check: the DMFT solved by method {self.prog.method!r} here "
                                              "has no sampled nodes whose count could bias it")
                    for k in NODE_FRACTIONS:
                        self.fewer[k] = dmft.BatchProgram(
                            self.model, self.data, schedule=self.schedule, fields=tuple(self.batched),
                            curves=False, final_time=final_time, interruptible=interruptible,
                            **_problem.solve_options(th), node_split=k)
                        self.fewer[k].check_memory(self.n_program, self.fewer[k].max_memory_gb)
            except MemoryLimitError as err:
                # the need as the library says it (a chunk's own where the program was built; else a
                # lower bound), the advice in the scan's keys (the library's named dmft.solve's
                # arguments: kernels=, replicas run a few at a time, which a scan has not)
                need = str(err).split(";")[0]
                if self.prog is None or (sc["node_check"] and len(self.fewer) < len(NODE_FRACTIONS)):
                    need += ", and a scan's call more (every replica of its points at once)"
                split = " (scan.node_check's programs split each replica's nodes: each part its own matrices)" \
                    if self.prog is not None and sc["node_check"] else ""
                raise dmft.InputError(
                    f"theory: {need}{split}; use a larger train.save_every, fewer theory.samples, a smaller "
                    f"scan.chunk ({self.n_program} points per compiled call here) or a larger "
                    f"theory.max_memory_gb ({th['max_memory_gb']:g}); a scan's call integrates every replica "
                    "of its points at once, so more theory.replicas do not help") from None
            # every point of the group gets solve_batch's checks (decay, final-time grid, mixed
            # gamma0) before any chunk is computed
            idx = group.indices
            self._first_bad(lambda pos: self.prog.check_points(
                {b: (columns[f][idx[pos]] if f is not None else np.full(len(pos), self.model.gamma0))
                 for b, f in self.batched.items()}))
            self.theory_key = jax.random.key(th["seed"])
        if sc["networks"]:
            import networks

            networks.plan_train(self.model, self.data, self.schedule, sim["width"], sim["seeds"],
                                **_problem.train_options(sim))
            self._first_bad(self._check_network_points)
            self.network_key = jax.random.key(sim["seed"])

    def _first_bad(self, check) -> None:
        """Run `check(positions)` on every point of the group; on an error name the first grid
        point that fails alone, by its index and values."""
        every = np.arange(len(self.group.indices))
        try:
            check(every)
        except dmft.InputError:
            for pos in every:
                try:
                    check(every[pos:pos + 1])
                except dmft.InputError as err:
                    i = int(self.group.indices[pos])
                    where = point_where(self.columns, i)
                    why = str(err).replace(" at point(s) [0]", "")
                    raise dmft.InputError(f"grid point {i} ({where}): {why}") from None
            raise

    def _check_network_points(self, pos) -> None:
        """The networks' schedules at these points: decay against eta0, the final-time grid."""
        idx = self.group.indices[pos]
        def column(field, default):
            return self.columns[field][idx] if field in self.columns else np.full(len(idx), default)
        eta = column("train.eta0", self.schedule.eta0)
        kappa = column("train.weight_decay", self.schedule.weight_decay)
        check_decay(eta, kappa, self.schedule.dynamics)
        final_time = self.cfg["train"].get("final_time", 0.0)
        if final_time:
            final_time_counts(final_time, self.schedule.save_steps.size, eta)

    @property
    def nbytes(self) -> int:
        d = self.data
        return sum(a.nbytes for a in (d.x_train, d.y_train, d.x_test, d.y_test) if a is not None)

    def compute(self, chunk: Chunk) -> dict:
        sc = self.cfg["scan"]
        idx = chunk.indices
        n = len(idx)
        out = {"index": idx.astype(np.int64)}
        if self.prog is not None:
            out.update(self.caches["theory"].rows_of(point_digests(self.cfg, self.columns, idx, "theory"),
                                                     lambda pos: self._theory(idx[pos])))
        if sc["networks"]:
            out.update(self.caches["networks"].rows_of(point_digests(self.cfg, self.columns, idx, "networks"),
                                                       lambda pos: self._networks(idx[pos])))
        return out

    def _theory(self, idx: np.ndarray) -> dict:
        sc = self.cfg["scan"]
        n = len(idx)
        # pad to the program's size by repeating the last point; drop the copies
        pad = np.concatenate([idx, np.repeat(idx[-1:], self.n_program - n)])
        values = {b: (self.columns[f][pad].astype(np.float64) if f is not None
                      else np.full(len(pad), self.model.gamma0)) for b, f in self.batched.items()}
        ids = point_ids(self.cfg, self.columns, pad, "theory")
        # (solve_batch's warnings counted the call's points and advised a setting a scan does not
        # have: raised again naming the grid points its flags mark)
        said = point_warnings(self.columns, np.asarray(idx))
        with said:
            rec = self.prog(values, ids, key=self.theory_key,
                            sharding=self.sharding, batch_key=self.batch_key)
            rec = {k: np.asarray(v)[:n] for k, v in rec.items()}
            said.marked = _flagged(idx, rec)
        out = derive("theory", rec, sc["outputs"], sc["grok_threshold"])
        if self.fewer:                 # the points' own nodes (the theory key), split: paired with them
            said = point_warnings(self.columns, np.asarray(idx))
            with said:
                fewer = [self.fewer[k](values, ids, key=self.theory_key, sharding=self.sharding,
                                       batch_key=self.batch_key) for k in NODE_FRACTIONS]
                fewer = [{k: np.asarray(v)[:n] for k, v in r.items()} for r in fewer]
                said.marked = np.unique(np.concatenate([_flagged(idx, r) for r in fewer]))
            out.update(node_outputs(rec, *fewer))
        return out

    def _networks(self, idx: np.ndarray) -> dict:
        sc = self.cfg["scan"]
        recs = [self._network_point(int(i)) for i in idx]
        rec = {k: np.stack([r[k] for r in recs]) for k in recs[0]}
        return derive("networks", rec, sc["outputs"], sc["grok_threshold"])

    def _network_point(self, i: int) -> dict:
        import jax

        import networks

        sim, m = self.cfg["simulate"], self.cfg["model"]
        v = {f: self.columns[f][i].item() for f in self.columns if f in BATCHED}
        model = self.model.replace(gamma0=v.get("model.gamma0", m["gamma0"]))
        if "model.eps" in v:
            model = model.replace(activation=dmft.activations.quadratic(v["model.eps"]))
        eta = v.get("train.eta0", self.schedule.eta0)
        sch = self.schedule.replace(eta0=eta, weight_decay=v.get("train.weight_decay", self.schedule.weight_decay))
        final_time = self.cfg["train"].get("final_time", 0.0)
        if final_time:                  # the same saved times as the theory's, at this eta0
            counts = final_time_counts(final_time, self.schedule.save_steps.size, eta)[0]
            sch = dmft.Schedule(eta0=eta, steps=int(counts[-1]), save_at=counts[1:].tolist(),
                                weight_decay=sch.weight_decay, batch_size=sch.batch_size)
        key = jax.random.fold_in(self.network_key, int(point_ids(self.cfg, self.columns, [i], "networks")[0]))
        with point_warnings(self.columns, i):
            run = networks.train(model, self.data, width=sim["width"], seeds=sim["seeds"], schedule=sch, key=key,
                                 batch_key=self.batch_key, **_problem.train_options(sim))
        return network_records(run)


class _Groups:
    """Builds each group's `_GroupRun` once; keeps at most KEEP_BYTES of data between uses."""

    KEEP_BYTES = 2 ** 30

    def __init__(self, cfg, pl: Plan, sharding, n_devices, interruptible: bool = False):
        self.cfg, self.plan, self.sharding, self.n_devices = cfg, pl, sharding, n_devices
        self.interruptible = interruptible      # chunks in calls of seconds (`dmft.BatchProgram`)
        self.columns = pl.grid.columns()
        self.kept: dict[int, _GroupRun] = {}
        # a part's outputs at a point another group computed (grid.PartCache): a width scan
        # solves its theory once, a scan of theory.* trains its networks once
        self.caches = {"theory": PartCache(), "networks": PartCache()}

    def get(self, g: int) -> _GroupRun:
        if g not in self.kept:
            group = self.plan.groups[g]
            try:
                if kind_of(self.cfg).name == "deep_linear":
                    self.kept[g] = DeepLinearGroup(self.plan.group_config(self.cfg, g), group, self.columns,
                                                    self.caches)
                else:
                    self.kept[g] = _GroupRun(self.plan.group_config(self.cfg, g), group, self.columns,
                                             self.sharding, self.n_devices, self.caches, self.interruptible)
            except ValueError as err:
                if not group.fields:
                    raise
                where = ", ".join(f"{f} = {v}" for f, v in group.fields.items())
                raise type(err)(f"at {where}: {err}") from err
        return self.kept[g]

    def preflight(self, groups, progress: bool = False) -> None:
        """Build (and so validate) every group, before any compute or write; with `progress`, a
        bar over the groups where there are several (100 training-set sizes took 30 s here)."""
        total, methods = 0, set()
        bar = _bar(len(groups), 0, "groups", "group", leave=False) if progress and len(groups) > 1 else None
        try:
            for g in sorted(groups):
                run = self.get(g)
                total += run.nbytes
                prog = getattr(run, "prog", None)
                methods.add(None if prog is None or prog.plan.sampled else prog.plan.method)
                if total > self.KEEP_BYTES:    # rebuilt when its turn comes
                    del self.kept[g]
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        # an axis of the node draw under a method that draws no nodes recomputes one point again
        # and again (the scan.theory / scan.networks switches are checked with the configuration)
        noop = [f for f in DRAW_FIELDS if f in self.columns]
        if noop and groups and None not in methods:
            raise ConfigError(f"scan.grid: {', '.join(noop)} scanned, but the DMFT is solved here by the "
                              f"{' and '.join(sorted(methods))} method, which draws no nodes: every value "
                              "gives the same point (drop the axis, or set theory.method = 'forward')")

    def release_before(self, g: int) -> None:
        """Drop the groups numbered below g (done with them), and JAX's compiled programs when
        they crowd the process's memory maps (`dmft.runner.drop_compiled_if_crowded`: a scan over
        ~90 shapes reached the kernel's limit and segfaulted in XLA's compiler)."""
        done = [k for k in self.kept if k < g]
        for k in done:
            del self.kept[k]
        if done:
            drop_compiled_if_crowded()


def _point_sharding(devices):
    """A NamedSharding of the point axis over `devices` (None for one device)."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) == 1:
        return None, 1
    return NamedSharding(Mesh(np.array(devices), ("points",)), PartitionSpec("points")), len(devices)


def store_identity(cfg: dict) -> dict:
    """What must match for a store to be resumed: configuration (less `SETTINGS`), code (the
    versions and a digest of the sources, `output.code_digest`), number type, the platform
    computed on, and the SHA-256 of a data file the scan reads (task.path)."""
    import jax
    import jaxlib

    from dmft.io import compute_platform, jsonable

    from ..output import code_digest

    cfg = jsonable(cfg)
    for sec, key in SETTINGS:
        if sec in cfg:
            cfg[sec].pop(key, None)
    ident = {"config": cfg, "x64": bool(jax.config.jax_enable_x64), "platform": compute_platform(),
             "versions": {"dmft": dmft.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__},
             "code": code_digest()}
    data = _problem.data_digest(cfg)                     # a changed data file is another scan
    if data:
        ident["data"] = data
    return ident


def _settings(cfg: dict) -> dict:
    """The `SETTINGS` of a configuration, as "section.key" -> value."""
    return {f"{sec}.{key}": cfg[sec][key] for sec, key in SETTINGS if key in cfg.get(sec, {})}


def _traces() -> int:
    from dmft.runner import TRACE_COUNTS

    return sum(v for k, v in TRACE_COUNTS.items() if k == "batch.point" or k.startswith("networks."))


def _pack(arrays: dict, meta: dict) -> bytes:
    return npz_bytes({**arrays, "__meta__": np.frombuffer(json.dumps(meta).encode(), np.uint8)})


def _unpack(blob: bytes) -> tuple[dict, dict]:
    arrays = npz_arrays(blob)
    return arrays, json.loads(arrays.pop("__meta__").tobytes().decode())


# ----------------------------------------------------------------- running

def run(config=None, out: str = "results/scan", *, overrides=(), devices=None,
        progress: bool = False, log=None, hang_timeout: float = HANG_TIMEOUT):
    """Run (or resume) a scan into the store `out`.

    Under `jax.distributed` every process calls this with the same configuration;
    each computes every count-th remaining chunk, and process 0 writes them all.

    Args:
        config: a TOML path, a dict laid out like one, or a `load_config` result.
        out: the store directory (created; a directory holding another scan is refused).
        overrides: "section.key=value" strings applied on top of `config`.
        devices: local devices to shard each chunk over (default: JAX's default device when
            one is set, `jax_default_device`, else all local devices).
        progress: a progress bar over points (process 0 only); every process then computes a chunk
            in calls of a few seconds, so that an interruption acts within seconds
            (`dmft.BatchProgram`'s interruptible; the same numbers).
        log: a callable receiving one-line messages (default: none).
        hang_timeout: under `jax.distributed`, seconds (1 to 86400) a process waits for a sign of life
            from each other process (signed every few seconds from a thread, however slow its chunk)
            before it says so and ends itself, exit status 6 (`os._exit`: its collectives cannot be
            interrupted); finished chunks are kept and the same command resumes. A stopped process
            (SIGSTOP, a paused machine) or a hung one (holding Python's lock) is found; a process
            whose main thread waits forever with its other threads alive is not.

    Returns:
        The `ScanResult` as loaded from the store (process 0), None on other processes.

    Raises:
        ConfigError / ValueError: bad configuration, before anything is computed or written.
        StoreConflict: `out` holds another scan, or is in use.
        StoreWriteError: a write failed (disk full, permissions); finished chunks are kept.
        dmft.DivergenceError, dmft.NotConverged: a solver failed outright (points that
            merely diverge are recorded, not raised).
    """
    import jax

    say = log or (lambda s: None)
    if isinstance(hang_timeout, bool) or not (isinstance(hang_timeout, (int, float)) and 1 <= hang_timeout <= 86400):
        raise ConfigError(f"hang_timeout: expected seconds in [1, 86400], got {hang_timeout!r}")
    # several processes: the watchdog from the start (a process slow to plan still signs); one: the
    # configuration is refused before JAX's backend starts
    comm = _Comm() if jax.distributed.is_initialized() else None

    def hung(silent):
        who = ("process " if len(silent) == 1 else "processes ") + ", ".join(str(i) for i in silent)
        say(f"scan {out}: process {comm.index} of {comm.count}: {who} gave no sign of life for "
            f"{hang_timeout:g} s: it ended (its own output says why), stopped (SIGSTOP, a paused machine) or "
            f"hung (a live process signs every "
            f"{dog.interval:g} s however slow its chunk; a longer hang timeout, --hang-timeout, waits longer); "
            "ended this process (exit 6); finished chunks are kept: start every process again with the "
            "same command to resume")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_LOST)     # (its collectives cannot be interrupted; JAX's shutdown would wait)

    dog = _Watchdog.start(comm, hang_timeout, hung) if comm is not None else None
    try:
        cfg = load_config(config, overrides)
        pl = plan(cfg)
        # the loaded configuration is checked for float64, the widest type; here the one this run uses
        check_gamma0(cfg, pl.grid, sampled_min_gamma0()[1])
        return _session(cfg, pl, comm or _Comm(), out, devices, progress, say, dog)
    finally:
        if dog is not None:
            dog.stop()


def _session(cfg, pl: Plan, comm: "_Comm", out, devices, progress, say, dog=None):
    """`run` from its processes' first collective to the end (the watchdog's time: `dog` stops at
    the last synchronisation, after which the other processes leave and sign no more while process
    0 loads the store and writes its report)."""
    import jax

    identity = store_identity(cfg)
    comm.agree(lambda: _same_everywhere(comm, identity))
    # before anything is written: the store must hold this scan or nothing, and every
    # group still to compute must build (data, programs: validated)
    expected, layout = pl.expected(), pl.layout()
    finished = set(comm.agree(lambda: sorted(Store.peek(out, identity, expected, layout)), first_only=True))
    if comm.agree(lambda: _complete(out, pl, finished), first_only=True):
        # as the other jobs' reruns: nothing to compute, so no session (its report.md alone written again,
        # where missing or not its store's: said)
        say(f"scan {out}: this scan is already complete (same configuration; its {pl.grid.size} points "
            "verified on disk); nothing computed. To compute it again, give another --out")
        if comm.index != 0:
            return None
        res = load(out)
        if not os.path.exists(os.path.join(out, REPORT)):    # (its session's write failed: said then)
            _report(res, say, "wrote its missing report")
        elif not _same_report(res):
            # an edited, damaged or swapped report would otherwise stand beside verified results
            _report(res, say, f"its {REPORT} did not match its store (changed or damaged); rewrote")
        return res
    if devices is None and jax.config.jax_default_device is not None:
        dd = jax.config.jax_default_device       # a device, or a platform's name
        devices = jax.local_devices(backend=dd) if isinstance(dd, str) else [dd]
    sharding, n_dev = _point_sharding(devices)
    # one device asked for: the programs and ensembles run there (no sharding places them; they
    # ran on JAX's default device while the session recorded this one)
    one = list(devices)[0] if devices is not None and len(list(devices)) == 1 else None

    def placed():
        return jax.default_device(one) if one is not None else contextlib.nullcontext()

    groups = _Groups(cfg, pl, sharding, n_dev, interruptible=progress)
    with placed():
        comm.agree(lambda: groups.preflight({c.group for c in pl.chunks if c.name not in finished},
                                            progress and comm.index == 0))
    settings = _settings(cfg)
    holder = {}

    def open_store():
        store = Store.create_or_open(out, identity, layout, settings)
        try:
            if store.stale_lock:
                say(f"scan {out}: cleared the lock left by process {store.stale_lock}, which no longer runs")
                store.log(event="stale_lock", process=store.stale_lock)
            good, bad = store.verified(expected)
            for name, reason in sorted(bad.items()):
                moved = store.set_aside(name)
                moved = os.path.basename(moved) if moved else None
                say(f"scan {out}: chunk file {os.path.basename(store.chunk_path(name))} is damaged ({reason}); "
                    + (f"moved to {moved}, its" if moved else "its record is dropped, its")
                    + " points will be computed again")
                store.log(event="damaged", chunk=name, reason=reason, moved_to=moved)
            store.save_manifest()
        except BaseException:           # (a failed write, disk full): the lock is not kept held
            store.close()
            raise
        holder["store"] = store
        return sorted(good)

    finished = set(comm.agree(open_store, first_only=True))
    store = holder.get("store")
    todo = [c for c in pl.chunks if c.name not in finished]
    skipped = sum(len(c.indices) for c in pl.chunks if c.name in finished)
    # the session's counts are saved with each chunk's record (`_write`: the journal line that
    # records the chunk), so a scan killed midway still counts what it computed
    stats = {g.number: {"chunks": 0, "points": 0, "compiles": 0, "seconds": 0.0, **dict.fromkeys(REUSED, 0)}
             for g in pl.groups}
    session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "processes": comm.count,
               "devices": [str(d) for d in (devices or jax.local_devices())], "settings": settings,
               "skipped_points": skipped, "computed_points": 0, "seconds": 0.0,
               "groups": [dict(stats[g.number], group=g.number) for g in pl.groups], "status": "running",
               "environment": environment()}        # python, numpy, optax, ... (the identity pins dmft and jax)
    say(f"scan {out}: {pl.grid.size} points in {len(pl.groups)} group(s), {len(pl.chunks)} chunk(s); "
        f"{skipped} already on disk, {pl.grid.size - skipped} to compute on {comm.count} "
        f"process(es) x {n_dev} device(s)")
    bar = _bar(pl.grid.size, skipped) if (progress and store is not None and todo) else None
    t0 = time.perf_counter()
    written = set()
    columns = pl.grid.columns()

    def account():
        session.update(seconds=time.perf_counter() - t0,
                       computed_points=sum(s["points"] for s in stats.values()),
                       groups=[dict(stats[g.number], group=g.number) for g in pl.groups])

    ended = False               # the loop's end reached: no error on its way
    late = None                 # a failed last manifest write, raised once every process is done
    try:
        if store is not None:
            store.manifest["sessions"].append(session)
        comm.agree(lambda: store.save_manifest(), first_only=True)
        for r in range(0, len(todo), comm.count):
            mine = todo[r + comm.index] if r + comm.index < len(todo) else None
            if mine is not None:
                groups.release_before(mine.group)      # chunks come group by group
            with placed():
                blob = b"" if mine is None else _compute(groups, mine, comm)
            blobs = comm.allgather(blob)
            errors = comm.agree(lambda: _write(store, blobs, stats, bar, columns, written, account),
                                first_only=True)
            if errors:
                e = errors[0]
                raise _error_class(e["error"])(f"chunk {e['chunk']} (process {e['process']}): "
                                               f"{e['message']}; finished chunks are kept")
        ended = True
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            account()
            done = len((finished | written) & {c.name for c in pl.chunks})
            session.update(status="complete" if done == len(pl.chunks) else "stopped")
            try:
                store.save_manifest()
            except StoreWriteError as err:
                if ended:     # (else the chunks are what matters, and an error is already on its way)
                    late = err      # raised after the other processes were let go (they wait below)
            store.close()
            if not ended and comm.index == 0 and done < len(pl.chunks):   # stopped: what is on disk
                kept = sum(len(c.indices) for c in pl.chunks if c.name in finished | written)
                why = sys.exc_info()[1]
                how = ("the same command resumes it" if isinstance(why, (KeyboardInterrupt, StoreWriteError,
                                                                         ProcessLost))
                       else "a rerun resumes it, but will meet the same error unless its cause is fixed")
                say(f"scan {out}: stopped with {done} of {len(pl.chunks)} chunk(s) on disk ({kept} of "
                    f"{pl.grid.size} points, {session['computed_points']} computed by this session); {how}")
    if comm.count > 1:
        from jax.experimental import multihost_utils

        try:
            with comm.lost():
                multihost_utils.sync_global_devices("dmft scan: store written")
        except ProcessLost as err:
            # lost at the very end: every chunk was written (the last round's write answered), and on
            # process 0 the manifest too: the scan is complete (it ended exit 6, "to resume")
            if not ended or late is not None:
                raise
            if comm.index != 0:
                raise ProcessLost(f"{err}; every chunk was computed and written by process 0 before, so the "
                                  "same command (on any number of processes) finds the scan complete or "
                                  "completes its record without computing") from err
            res = load(out)
            _report(res, say, "report")
            raise ProcessLost(f"the scan is complete: its {len(pl.chunks)} chunk(s) and manifest were written "
                              f"before {err}", result=res) from err
        finally:
            if dog is not None:
                dog.stop()
    if late is not None:
        raise late
    if comm.index != 0:
        return None
    res = load(out)
    _report(res, say, "report")
    return res


def _same_report(res) -> bool:
    """Whether the store's report.md is the report `res`'s store gives (`report_text`), written for
    the path the report names (a rerun may name the store another way, or a moved one)."""
    try:
        with open(os.path.join(res.path, REPORT), "rb") as fh:
            held = fh.read()
    except OSError:
        return False
    named = re.search(rb"^res = scan\.load\((.*)\)   # ", held, re.M)
    try:
        path = ast.literal_eval(named.group(1).decode()) if named else res.path
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return False
    return isinstance(path, str) and held == text_bytes(report_text(dataclasses.replace(res, path=path)))


def _report(res, say, what: str) -> None:
    """Write the store's report.md (`write_report`) and say so; a failed write is said and
    loses nothing (the results are on disk, verified)."""
    try:
        say(f"scan {res.path}: {what} {write_report(res)}")
    except OSError as err:
        say(f"scan {res.path}: could not write its {REPORT} ({err}); the results are in the store, and "
            "experiments.scan.load(...).summary() says what it holds")


def _complete(out, pl: Plan, finished: set) -> bool:
    """Whether the store at `out` holds every chunk of the plan, verified (`finished`), and its last
    session ended (complete). A last session that still says "running" was killed after its last
    chunk (or runs): the rerun then opens the store as a resume does, clearing a stale lock and
    recording a session that says complete."""
    if not pl.chunks or any(c.name not in finished for c in pl.chunks):
        return False
    sessions = Store.read(out).manifest.get("sessions") or []
    return bool(sessions) and sessions[-1].get("status") != "running"


def _same_everywhere(comm: _Comm, identity: dict) -> None:
    ids = comm.allgather(json.dumps(identity, sort_keys=True).encode())
    if len(set(ids)) > 1:
        raise ConfigError("the processes of this scan were given different configurations or "
                          "versions; start every process with the same command")


DRAW_FIELDS = ("theory.samples", "theory.replicas", "theory.seed")   # read only by sampled methods
REUSED = ("theory_reused", "networks_reused")      # per group: points whose part was another point's


def _compute(groups: _Groups, chunk: Chunk, comm: _Comm) -> bytes:
    """One chunk's arrays and bookkeeping, packed; a failure is packed too when other
    processes wait for this one (they all raise it after the round)."""
    before, t1 = _traces(), time.perf_counter()
    hits = {part: cache.hits for part, cache in groups.caches.items()}
    try:
        arrays = groups.get(chunk.group).compute(chunk)
    except (ArithmeticError, ValueError, RuntimeError) as err:
        if comm.count == 1:
            raise
        return _pack({}, {"chunk": chunk.name, "process": comm.index, "error": type(err).__name__,
                          "message": str(err)})
    # points whose theory or networks were another point's (grid.PartCache): a width scan solves
    # its theory once; the summary says so rather than count them as solved again
    reused = {f"{part}_reused": cache.hits - hits[part] for part, cache in groups.caches.items()}
    return _pack(arrays, {"chunk": chunk.name, "group": chunk.group, "process": comm.index,
                          "seconds": time.perf_counter() - t1, "compiles": _traces() - before, **reused})


def _write(store: Store, blobs, stats, bar, columns, written, account) -> list:
    """Process 0 writes the round's chunks (each with its points' coordinates, and the session's
    counts saved with its record); returns the failures reported by any process."""
    errors = []
    for blob in blobs:
        if not blob:
            continue
        arrays, meta = _unpack(blob)
        if "error" in meta:
            errors.append(meta)
            continue
        n = len(arrays["index"])

        def count(meta=meta, n=n):
            st = stats[meta["group"]]
            st["chunks"] += 1
            st["points"] += n
            st["compiles"] += meta["compiles"]
            st["seconds"] += meta["seconds"]
            for part in REUSED:
                st[part] += meta.get(part, 0)
            written.add(meta["chunk"])
            account()

        store.write_chunk(meta["chunk"], arrays, coords={f: c[arrays["index"]] for f, c in columns.items()},
                          family=f"group {meta['group']}", then=count)
        store.log(event="chunk", chunk=meta["chunk"], points=n, process=meta["process"],
                  seconds=round(meta["seconds"], 6))
        if bar is not None:
            bar.update(n)
    return errors


def _bar(total, initial, desc="scan", unit="pt", leave=True):
    try:
        from tqdm.auto import tqdm
    except ImportError:   # progress is a nicety
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, smoothing=0.1, leave=leave)


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, timeout: int = 300, heartbeat: int = 100) -> None:
    """Join JAX's multi-process runtime (for entry points; CPU processes talk through gloo).

    With no arguments JAX detects a cluster (SLURM, ...); else give all three.
    Must run before anything else touches JAX's devices. JAX waits up to `timeout` seconds
    for every process to join, then aborts the process; it aborts every process where one has sent
    no heartbeat for `heartbeat` seconds (give it more than `run`'s hang_timeout, which says so first).

    Raises:
        ConfigError: process 0's port is in use (JAX's coordinator could not listen there: the
            process crashed, SIGSEGV; or, where another scan's coordinator held it, both bound it,
            and the other scan's process 0 was aborted).
    """
    import jax

    if process_id == 0 and coordinator is not None:
        check_port_free(coordinator)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=int(timeout),
                               heartbeat_timeout_seconds=int(heartbeat))


def check_port_free(coordinator: str) -> None:
    """Refuse a coordinator port something on this machine listens on (JAX's coordinator binds it
    on every address; a socket bound without SO_REUSEPORT, as here, finds another scan's coordinator
    too, which gRPC's own bind would have shared the port with)."""
    import errno
    import socket

    port = int(str(coordinator).rpartition(":")[2])
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:         # (no IPv6 here)
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # (as gRPC: TIME_WAIT is free)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                sock.bind((host, port))
                sock.listen(1)
            except OSError as err:
                if err.errno != errno.EADDRINUSE:      # (say, IPv6 off: the next family)
                    continue
                raise ConfigError(f"--coordinator {coordinator}: port {port} is in use on this machine "
                                  f"({err.strerror or err}; another scan's coordinator?); give process 0 "
                                  "and every other process a free port") from None
        return

