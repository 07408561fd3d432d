"""Every Python block of the README runs as shown (in order, in one fresh process, in an
empty directory), and the command line it shows for your own data works."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks():
    text = pathlib.Path(ROOT, "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run(tmp_path):
    blocks = _blocks()
    assert len(blocks) >= 3
    code = "\n".join(blocks)
    env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in ("losses.png", "gap.png", "mine.npz", "results/my_run.npz", "results/my_run.json"):
        assert (tmp_path / f).exists(), f


def test_readme_own_data_command(tmp_path):
    """`dmft validate --set task.name=npz --set task.path=mine.npz ...` as the README shows it."""
    from experiments import cli
    import dmft
    import numpy as np

    x = np.random.default_rng(0).normal(size=(40, 3))
    dmft.Dataset(x[:30], np.tanh(x[:30, 0]), x[30:], np.tanh(x[30:, 0])).save(tmp_path / "mine.npz")
    out = tmp_path / "mine"
    code = cli.main(["solve", "--set", "task.name=npz", "--set", f"task.path={tmp_path / 'mine.npz'}",
                     "--gamma0", "0.1", "1", "--out", str(out), "--steps", "20",
                     "--set", "train.save_every=10", "--samples", "256", "--no-progress"])
    assert code == 0 and (out / "theory" / "dmft_gamma0_1.npz").exists()
