#!/usr/bin/env bash
# One prepared run for a lent accelerator machine, in the repository root there (issue 14, goal 4):
# what has not yet run on a GPU, most wanted first, each part under its own share of a time budget
# so that one call returns with every part's log, whatever is cut.
#
#   bash scripts/device_check.sh OUT [SECONDS]      (default 540: one call of at most 600 s)
#
# Parts, in order (a part's share is its limit; a part is skipped when under 15 s are left):
#   env             JAX's version and devices
#   check_devices   every solver and trainer on the CPU and the accelerator, their answers compared
#                   (the minibatch rows too: a key's batches are the same on every platform)
#   tests_first     the test files most of whose tests have never run on a GPU (the one lease so
#                   far, 15 minutes, ran 798 of 1167 tests), then tests_rest: the others;
#                   pytest -v streams each verdict to the log, and a cut run still prints its
#                   summary (SIGINT; its exit status is then 124 whatever the verdicts)
#   bench_*         bench_dmft's SGD and error-per-cost tables, bench_networks, bench_scan and
#                   bench_memory, in --quick form
# It runs from the checkout (PYTHONPATH), under the machine's own Python (PYTHON, default python3),
# with the tests' XLA:CPU flags off (DMFT_TEST_XLA_FLAGS=off: that machine's XLA refused one) and
# without JAX's preallocation of GPU memory (the test workers share one GPU).
# OUT/summary.txt (written anew) lists each part's exit status and seconds.
set -u
out=${1:?usage: bash scripts/device_check.sh OUT [SECONDS]}
budget=${2:-540}
py=${PYTHON:-python3}
mkdir -p "$out"
: >"$out/summary.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DMFT_TEST_XLA_FLAGS=off XLA_PYTHON_CLIENT_PREALLOCATE=false
first=(tests/test_solvers.py tests/test_validation.py tests/test_trajectory.py
       tests/test_validation_inputs.py tests/test_tasks.py)
start=$(date +%s)

part() {   # part NAME SHARE COMMAND...
    local name=$1 share=$2 left t s rc
    shift 2
    left=$((budget - ($(date +%s) - start)))
    t=$((left < share ? left : share))
    if [ "$t" -lt 15 ]; then
        echo "$name: skipped ($left s of the budget left)" | tee -a "$out/summary.txt"
        return
    fi
    s=$(date +%s)
    timeout -s INT -k 15 "$t" "$@" >"$out/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc after $(($(date +%s) - s)) s (limit $t s)" | tee -a "$out/summary.txt"
}

part env 30 "$py" -c "import jax, jaxlib; print(jax.__version__, jaxlib.__version__, jax.devices())"
part check_devices 130 "$py" scripts/check_devices.py --json "$out/check_devices.json"
part tests_first 150 "$py" -m pytest -v -n 12 -p no:cacheprovider -p no:randomly "${first[@]}"
part tests_rest 90 "$py" -m pytest -v -n 12 -p no:cacheprovider -p no:randomly \
    "${first[@]/#/--ignore=}" tests
part bench_dmft 60 "$py" scripts/bench_dmft.py --quick --tables 2d,3 --json "$out/bench_dmft.json"
part bench_networks 40 "$py" scripts/bench_networks.py --quick
part bench_scan 40 "$py" scripts/bench_scan.py --quick --json "$out/bench_scan.json"
part bench_memory 30 "$py" scripts/bench_memory.py --quick --json "$out/bench_memory.json"
echo "total: $(($(date +%s) - start)) s of $budget" | tee -a "$out/summary.txt"
