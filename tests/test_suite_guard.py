"""The suite's own guard: a test that hangs fails, naming where it hung (tests/conftest.py)."""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def test_a_hanging_test_fails_with_its_traceback(tmp_path):
    # a conftest that loads this suite's (its hooks under another module name) and a test that
    # never returns: the run must end at the limit, fail, and print the line it hung on
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('suite_conftest', {os.path.join(HERE, 'conftest.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(mod)\n"
        "pytest_configure = mod.pytest_configure\npytest_runtest_protocol = mod.pytest_runtest_protocol\n")
    (tmp_path / "test_hang.py").write_text(
        "import time\n\ndef test_never_returns():\n    while True:\n        time.sleep(0.05)  # HUNG HERE\n")
    env = dict(os.environ, DMFT_TEST_TIMEOUT="2", CI="")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                          "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path / "test_hang.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    assert out.returncode != 0
    assert "test_hang.py\", line 5 in test_never_returns" in out.stderr, out.stderr[-2000:]
    assert took < 60, took
