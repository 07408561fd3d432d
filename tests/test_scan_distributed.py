"""A scan's processes under jax.distributed when one of them is lost, never comes, or cannot
listen: each ends within a stated time, says why, and loses nothing (a resume equals one
uninterrupted process bit for bit)."""

import os
import select
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import cli, scan
from experiments.store import Store
from scan_configs import TOML   # (linear closure: 20 points, 2 groups, 4 chunks)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# process 0 stops after its first chunk file, says WROTE, and goes on at a line on its stdin
PAUSE_AFTER_FIRST_WRITE = """
from experiments.store import Store
write = Store.write_chunk
def write_chunk(self, name, arrays, **kw):
    write(self, name, arrays, **kw)
    if not getattr(write_chunk, "done", False):
        write_chunk.done = True
        print("WROTE", flush=True)
        sys.stdin.readline()
Store.write_chunk = write_chunk
"""


def _dmft_scan(args, patch="", xla_flags=""):
    """`dmft scan ARGS` in a fresh process (on CPU), after the Python in `patch`."""
    code = f"import sys\n{patch}\nfrom experiments import cli\nsys.exit(cli.main(['scan'] + sys.argv[1:]))"
    flags = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS=flags)
    return subprocess.Popen([sys.executable, "-c", code] + args, cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _line(proc, text, timeout=120):
    """Read proc's stdout until a line `text` (gloo prints there too); False after timeout s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], max(end - time.monotonic(), 0))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            return False
        if line.strip() == text:
            return True
    return False


def _end(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=30)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "scan.toml"
    path.write_text(TOML)
    return str(path)


def _distributed(config, out, port, count, rank, *extra):
    return ["--config", config, "--out", out, "--no-progress", "--coordinator", f"127.0.0.1:{port}",
            "--num-processes", str(count), "--process-id", str(rank), *extra]


def test_a_killed_worker_ends_process_0_at_once_and_a_resume_on_one_process_equals_one(config, tmp_path):
    """A worker SIGKILLed mid-scan: process 0's collective failed with gloo's error as a ValueError,
    so `dmft scan` said "configuration error", advised that a rerun would meet the same error, and
    then waited 95 s in JAX's shutdown before JAX aborted it (SIGABRT). Now it ends at once (exit 6),
    says a process was lost and that the same command resumes; the resume on one process equals an
    uninterrupted one bit for bit, each chunk written once."""
    out, port = str(tmp_path / "store"), _free_port()
    procs = [_dmft_scan(_distributed(config, out, port, 2, 0), PAUSE_AFTER_FIRST_WRITE),
             _dmft_scan(_distributed(config, out, port, 2, 1))]
    try:
        assert _line(procs[0], "WROTE")
        assert len(os.listdir(os.path.join(out, "chunks"))) == 1
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(timeout=30)
        t0 = time.perf_counter()
        procs[0].stdin.write("\n")
        procs[0].stdin.flush()
        _, err = procs[0].communicate(timeout=20)       # (it took 95 s, then SIGABRT)
        took = time.perf_counter() - t0
    finally:
        _end(procs)
    assert procs[0].returncode == cli.EXIT_LOST == 6, err[-3000:]
    assert took < 10, took
    assert "lost contact with the scan's other processes" in err and "configuration error" not in err
    assert "the same command resumes it" in err
    stopped = Store.read(out).manifest["sessions"][-1]
    assert stopped["status"] == "stopped" and stopped["processes"] == 2
    kept = stopped["computed_points"]
    assert kept > 0
    resumed = scan.run(config, out)
    reference = scan.run(config, str(tmp_path / "reference"))
    assert resumed.complete and sorted(resumed.arrays) == sorted(reference.arrays)
    for k in reference.arrays:
        np.testing.assert_array_equal(resumed[k], reference[k], err_msg=k)
    written = [e["chunk"] for e in Store.read(out).events() if e.get("event") == "chunk"]
    assert sorted(written) == sorted(set(written)) and len(written) == 4
    assert resumed.manifest["sessions"][-1]["skipped_points"] == kept


def test_a_process_that_never_joins_ends_the_others_with_a_message(config, tmp_path):
    """Process 1 never started: process 0 waited 300 s in silence, then JAX aborted it saying that
    "another task died". Now it says at once how long it waits, and ends after --join-timeout
    saying that not every process joined (exit 2), having written nothing."""
    out = str(tmp_path / "store")
    t0 = time.perf_counter()
    proc = _dmft_scan(_distributed(config, out, _free_port(), 2, 0, "--join-timeout", "2"))
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        _end([proc])
    took = time.perf_counter() - t0
    assert proc.returncode == 2, err[-3000:]
    assert "process 0 of 2: waiting up to 2 s for the scan's processes to join" in err
    assert "not every process joined at 127.0.0.1:" in err and "within 2 s" in err
    assert 2 <= took < 20, took
    assert not os.path.exists(out)


def test_a_coordinator_port_in_use_is_refused(config, tmp_path, capsys):
    """Process 0 given a port that something listens on crashed (SIGSEGV, one line of gRPC's log)
    and its workers waited 300 s; another scan's coordinator on it was shared (gRPC's SO_REUSEPORT)
    and that scan's process 0 was aborted. Now it is refused with a message (exit 2).
    (Asked in this process: the refusal comes before JAX's runtime starts, which nothing here needs
    a fresh process for; without the check the runtime fails to start here, exit 2 naming gRPC's
    "Failed to start RPC server" after "waiting up to", which the assertions below refuse.)"""
    out = str(tmp_path / "store")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = cli.main(["scan"] + _distributed(config, out, port, 1, 0))
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert f"port {port} is in use on this machine" in err
    assert "waiting up to" not in err, err[-3000:]       # (refused before it says it waits)
    assert not os.path.exists(out)


def test_processes_with_different_device_counts_are_refused(config, tmp_path):
    """Process 0 with 2 devices and process 1 with 1: the first collective failed inside JAX
    ("cannot reshape array of size 3 into shape (2,2)"), reported as a configuration error in
    those words. Now both refuse it naming the counts (exit 2), before anything is written."""
    out, port = str(tmp_path / "store"), _free_port()
    procs = [_dmft_scan(_distributed(config, out, port, 2, 0), xla_flags="--xla_force_host_platform_device_count=2"),
             _dmft_scan(_distributed(config, out, port, 2, 1))]
    try:
        errs = [p.communicate(timeout=60)[1] for p in procs]
    finally:
        _end(procs)
    for p, err in zip(procs, errs):
        assert p.returncode == 2, err[-3000:]
        assert "have different numbers of devices ([2, 1], by process)" in err, err[-3000:]
    assert not os.path.exists(out)


@pytest.mark.parametrize("value", ["-5", "5"])
def test_a_join_timeout_without_processes_to_join_is_refused(config, tmp_path, capsys, value):
    """--join-timeout is read only where processes join (--coordinator or --distributed): on one
    process any value, -5 too, was accepted and the scan ran as if it were not given. Refused
    now before anything is computed or written."""
    out = str(tmp_path / "store")
    assert cli.main(["scan", "--config", config, "--out", out, "--no-progress", "--join-timeout", value]) == 2
    err = capsys.readouterr().err
    assert "--join-timeout: read only with --coordinator or --distributed" in err, err
    assert not os.path.exists(out)


def _wait(proc, timeout):
    """proc's exit status and stderr, and the seconds it took to end (from now)."""
    t0 = time.perf_counter()
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err, time.perf_counter() - t0


def test_a_stopped_worker_ends_process_0_after_the_hang_timeout(config, tmp_path):
    """A worker stopped (SIGSTOP) mid-scan: process 0 waited in its collective until JAX's own
    heartbeat (~90 s here) aborted every process (SIGABRT, JAX's messages). Now it ends after
    --hang-timeout (2 s) with exit 6, naming the silent process and saying the same command
    resumes; its chunks are kept."""
    out, port = str(tmp_path / "store"), _free_port()
    args = ("--hang-timeout", "2")
    procs = [_dmft_scan(_distributed(config, out, port, 2, 0, *args), PAUSE_AFTER_FIRST_WRITE),
             _dmft_scan(_distributed(config, out, port, 2, 1, *args))]
    try:
        assert _line(procs[0], "WROTE")
        procs[1].send_signal(signal.SIGSTOP)
        procs[0].stdin.write("\n")
        procs[0].stdin.flush()
        code, err, took = _wait(procs[0], 30)
    finally:
        procs[1].send_signal(signal.SIGKILL)     # (a stopped process ends on SIGKILL)
        _end(procs)
    assert code == cli.EXIT_LOST == 6, err[-3000:]
    # the timeout counts from the worker's last heartbeat process 0 saw, up to two intervals (0.25 s
    # each: its beat's, process 0's look's) before the SIGSTOP (1.98 s was measured once); then at most
    # a few heartbeats and a busy machine's delay
    assert 2 - 2 * 0.25 <= took < 12, took
    assert "process 0 of 2: process 1 gave no sign of life for 2 s" in err, err[-3000:]
    assert "the same command to resume" in err and "Terminating process" not in err
    assert len(os.listdir(os.path.join(out, "chunks"))) >= 1


# process 1's first chunk takes 5 s more (a slow chunk: the watchdog's thread signs meanwhile, as
# it does while JAX compiles or computes, which release Python's lock)
SLOW_FIRST_CHUNK = """
import time
from experiments.scan import execute
compute = execute._GroupRun.compute
def slow(self, chunk):
    if not getattr(slow, "done", False):
        slow.done = True
        time.sleep(5)
    return compute(self, chunk)
execute._GroupRun.compute = slow
"""

# process 0 stops after it closed the store (the manifest says complete), says CLOSED, and goes
# on at a line on its stdin
PAUSE_AFTER_CLOSE = """
from experiments.store import Store
close = Store.close
def close_after(self):
    close(self)
    print("CLOSED", flush=True)
    sys.stdin.readline()
Store.close = close_after
"""


def test_a_slow_chunk_is_not_cut_and_a_worker_lost_after_the_last_write_leaves_a_complete_scan(config, tmp_path):
    """A chunk 2.5 times --hang-timeout long (2 s) is waited for; a worker killed after the scan was
    complete on disk (in the last synchronisation) ended process 0 with exit 6, "to resume", and no
    report.md (a rerun said complete and wrote it). Now process 0 writes the report, says the scan is
    complete and ends with exit 0."""
    out, port = str(tmp_path / "store"), _free_port()
    args = ("--hang-timeout", "2")
    procs = [_dmft_scan(_distributed(config, out, port, 2, 0, *args), PAUSE_AFTER_CLOSE),
             _dmft_scan(_distributed(config, out, port, 2, 1, *args), SLOW_FIRST_CHUNK)]
    try:
        assert _line(procs[0], "CLOSED", timeout=90)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(timeout=30)
        procs[0].stdin.write("\n")
        procs[0].stdin.flush()
        code, err, _ = _wait(procs[0], 30)
    finally:
        _end(procs)
    assert code == 0, err[-3000:]
    assert "gave no sign of life" not in err
    assert "the scan is complete: its 4 chunk(s) and manifest were written before process 0 of 2 lost" in err
    assert "to resume" not in err
    assert os.path.exists(os.path.join(out, "report.md"))
    res = scan.load(out)
    assert res.complete and res.manifest["sessions"][-1]["status"] == "complete"
    assert sorted(e["process"] for e in Store.read(out).events() if e.get("event") == "chunk") == [0, 0, 1, 1]


def test_a_hang_timeout_is_checked(config, tmp_path, capsys):
    """--hang-timeout: refused where nothing waits (one process) and out of [1, 86400], before
    anything is computed or written; scan.run refuses the same."""
    out = str(tmp_path / "store")
    assert cli.main(["scan", "--config", config, "--out", out, "--no-progress", "--hang-timeout", "5"]) == 2
    assert "--hang-timeout: read only with --coordinator or --distributed" in capsys.readouterr().err
    for bad in (0.5, float("nan"), "60", True):
        with pytest.raises(scan.ConfigError, match="hang_timeout: expected seconds in"):
            scan.run(config, out, hang_timeout=bad)
    assert not os.path.exists(out)
    assert cli.HANG_TIMEOUT == scan.execute.HANG_TIMEOUT       # (the help's default is the library's)


# process 0's report takes 5 s (a large store's load and report.md, after every process's last sync)
SLOW_REPORT = """
import time
from experiments.scan import execute
report = execute.write_report
def slow(res):
    time.sleep(5)
    return report(res)
execute.write_report = slow
"""


def test_a_slow_report_after_the_last_sync_is_not_taken_for_a_hang(config, tmp_path):
    """After the last synchronisation the other processes leave `run` (their watchdogs stop
    signing) while process 0 loads the store and writes report.md: a report longer than
    --hang-timeout (2 s) ended a complete scan with exit 6, 'process 1 gave no sign of life', and
    no report. The watchdog now stops at that synchronisation."""
    out, port = str(tmp_path / "store"), _free_port()
    args = ("--hang-timeout", "2")
    procs = [_dmft_scan(_distributed(config, out, port, 2, 0, *args), SLOW_REPORT),
             _dmft_scan(_distributed(config, out, port, 2, 1, *args))]
    try:
        code, err, _ = _wait(procs[0], 120)
    finally:
        _end(procs)
    assert code == 0, err[-3000:]
    assert "gave no sign of life" not in err
    assert os.path.exists(os.path.join(out, "report.md"))
