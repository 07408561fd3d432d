"""Unusual output and data paths: a file named with a trailing slash, a symbolic link to a
missing target or a loop of links as --out (or above it), the errno of a scan store's refusal,
and a data file named through ".." after a symbolic link."""

import os

import numpy as np
import pytest

from experiments import cli, output
from experiments.config import resolve_path
from experiments.store import Store, StoreConflict


def _blocked(tmp_path):
    (tmp_path / "a_file").write_text("mine")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    return {f"{tmp_path}/a_file/": "a_file/? exists and is not a directory",
            f"{tmp_path}/dangling": "dangling is a symbolic link to",
            f"{tmp_path}/dangling/sub": "dangling is a symbolic link to",
            f"{tmp_path}/loop": "loop is a symbolic link to"}


def test_a_blocked_out_is_named_for_runs_and_scan_stores(tmp_path):
    """Each was refused as "cannot write the results directory (File exists)" (or "No such file
    or directory", "[Errno 20] Not a directory: .../chunks" for a scan store): now the path in
    the way and why, before anything is made."""
    for out, said in _blocked(tmp_path).items():
        with pytest.raises(output.OutputError, match=said):
            output.prepare_output(out, "solve", {}, force=False)
        with pytest.raises(StoreConflict, match=said):
            Store.create_or_open(out, {}, {})
    assert sorted(os.listdir(tmp_path)) == ["a_file", "dangling", "loop"]
    assert (tmp_path / "a_file").read_text() == "mine"


def test_a_store_error_with_an_errno_prints_no_errno(tmp_path, capsys, monkeypatch):
    """A scan store's OutputError made with an errno (a 256-byte name: ENAMETOOLONG) printed
    "dmft scan: [Errno 36] cannot use ..."; now the message alone, exit 3."""
    from dmft.errors import StoreWriteError

    def scan(args):
        raise StoreWriteError(36, f"cannot use {args.out} as a scan store: File name too long")

    monkeypatch.setitem(cli._JOBS, "scan", scan)
    assert cli.main(["scan", "--out", str(tmp_path / "s")]) == cli.EXIT_OUTPUT
    assert capsys.readouterr().err == f"dmft scan: cannot use {tmp_path / 's'} as a scan store: File name too long\n"


def test_dot_dot_after_a_symlink_is_the_targets_parent(tmp_path, monkeypatch):
    """task.path "sl/../d.npz", sl a link to other/sub: the OS reads other/d.npz; normpath made it
    ./d.npz ("data file not found", or another file read). Without a link, as before."""
    (tmp_path / "other" / "sub").mkdir(parents=True)
    os.symlink("other/sub", tmp_path / "sl")
    np.savez(tmp_path / "other" / "d.npz", x=np.zeros(1))
    monkeypatch.chdir(tmp_path)
    assert resolve_path("sl/../d.npz", None) == str(tmp_path / "other" / "d.npz")
    assert resolve_path("other/sub/../d.npz", None) == str(tmp_path / "other" / "d.npz")
    assert resolve_path("a/../b.npz", "/q") == "/q/b.npz"
