"""Test configuration: float64 everywhere, and implicit rank promotion is an error.

The tests run many small programs, so XLA's compile time dominates them (about 70% of a test's
time, measured per test with JAX's compile events): they ask for the cheapest backend
optimization and for XLA:CPU's former (LLVM) fusion emitters, which compile a program in about
half the time of the newer MLIR ones (results are the same numbers up to rounding, e.g. 3e-14
in the sampler's nodes; the speed of large runs is measured by the benchmarks, never by tests),
and for one LLVM module a program rather than parts compiled on threads (a worker a core leaves
no core for them: 8 small solves' compiles took 7.6 s of CPU against 8.5, means of three runs).
Subprocesses the tests start inherit them through XLA_FLAGS. DMFT_TEST_XLA_FLAGS=off leaves
XLA_FLAGS alone, for an XLA that does not know the last two flags (JAX 0.11 on a lent GPU machine:
`scripts/device_check.sh`)."""

import os

for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
              "--xla_cpu_parallel_codegen_split_count=1"):
    if os.environ.get("DMFT_TEST_XLA_FLAGS") == "off":
        break
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# One OpenBLAS thread a process (numpy's and scipy's BLAS and LAPACK): the suite runs
# one test worker a core (`-n auto`), and a worker's LAPACK call that wakes a second thread on a
# busy core waits for it: measured with both cores busy, numpy's leggauss(512) (an eigvalsh)
# took 0.04-2.7 s with the default threads and 0.02-0.13 s with one. Set before numpy
# loads (OpenBLAS reads it then); subprocesses the tests start inherit it. The same LAPACK and BLAS
# routines run, on one thread (a sum split over threads may round differently in its last bits).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# the command's persistent compilation cache stays off in the tests (it would write to the
# home folder and set JAX's config in the test process); tests/test_validation.py turns it on
# in fresh processes
os.environ["DMFT_COMPILE_CACHE"] = "off"

import atexit  # noqa: E402
import faulthandler  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# The test workers compile many of the same programs (and one compiles a program again after the
# memory maps below dropped it): they share one persistent compilation cache for the run, a
# temporary folder that the process which made it (pytest's main process, which loads this file
# before it starts the workers) removes at its end. A cached program is the program XLA would
# compile: the same numbers. Measured: 8% less CPU time over five test files, from a cold cache.
if "DMFT_TEST_XLA_CACHE" not in os.environ:
    os.environ["DMFT_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="dmft-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["DMFT_TEST_XLA_CACHE"], True)
if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.environ["DMFT_TEST_XLA_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)


# Under CI (CI=true) Hypothesis draws each test's examples from a seed derived from the test, the
# same every run, so that a CI result can be reproduced; a local run draws them at random, to
# explore. (A random draw made a batch test fail at data seed 1950, where its unit-scale check
# assumed what does not hold on every draw: tests/test_batch.py, fixed.)
# The suite's profile is "suite"; a module that loads a profile of its own for its tests loads
# "suite" again after them (tests/test_properties.py), since Hypothesis gives each test the
# profile loaded when its module is imported: that module's, left loaded, derandomized and cut to
# 20 examples the tests of every module imported after it.
settings.register_profile("suite", derandomize=os.environ.get("CI", "").lower() in ("1", "true", "yes"))
settings.load_profile("suite")


# A test that hangs fails instead of holding the run until CI's own limit: past TEST_TIMEOUT_S
# (DMFT_TEST_TIMEOUT seconds, 0: none) the process prints every thread's traceback and exits, and
# pytest-xdist reports the test it was running as crashed (a mutation audit's mutant of the save
# loop, silent steps not summed, showed only as a hang). The slowest test takes about a minute on
# two busy cores; the limit is ten times that, far from any test that runs.
TEST_TIMEOUT_S = float(os.environ.get("DMFT_TEST_TIMEOUT", "600"))
_STDERR = []


def pytest_configure(config):
    _STDERR.append(os.dup(2))       # the process's stderr (pytest captures it only inside a test)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if TEST_TIMEOUT_S > 0 and _STDERR:
        faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True, file=_STDERR[0])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def key():
    return jax.random.key(20261122)


# XLA:CPU maps each compiled program's code into memory, and JAX keeps every program a process
# compiled: a test worker that runs half the suite reached the kernel's limit on a process's
# memory maps (vm.max_map_count, 65530 by default; test_solvers.py alone leaves ~41000) and
# segfaulted in XLA's compiler. Past 45% of the limit the compiled programs are dropped between
# tests (`dmft.runner.drop_compiled_if_crowded`; a later test compiles its own again).
@pytest.fixture(autouse=True)
def _keep_memory_maps_in_bounds():
    yield
    from dmft.runner import drop_compiled_if_crowded

    drop_compiled_if_crowded()
