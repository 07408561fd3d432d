"""The command's text files under a locale that is not UTF-8."""
import os
import subprocess
import sys

PROBE = r"""
import os, sys, tomllib
from experiments import output
for i, p in enumerate(["/data/caf\u00e9.npz", os.fsdecode(b"/data/caf\xc3\xa9.npz")]):
    out = os.path.join(sys.argv[1], f"o{i}")
    try:
        output.prepare_output(out, "solve", {"task": {"name": "npz", "path": p}}, False, log=lambda s: None)
    finally:
        output.release(out)
    with open(os.path.join(out, "config.toml"), "rb") as fh:
        print(tomllib.load(fh)["task"]["path"].encode("utf-8").hex())
"""


def test_config_toml_is_utf8_under_an_ascii_locale(tmp_path):
    """config.toml and report.md were written in the locale's encoding: under LC_ALL=C (no UTF-8
    mode) a non-ASCII path (task.path, from a TOML file or from argv) ended the run with "configuration
    error: 'ascii' codec can't encode ..." (exit 2, run.json left "running"), and a Latin-1 locale
    wrote a config.toml that TOML (UTF-8) cannot read back. They are UTF-8 now, a path the locale
    could not decode written back as its own bytes."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    run = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["/data/caf\u00e9.npz".encode().hex()] * 2, run.stdout


def test_a_path_stdout_cannot_encode_does_not_fail_a_complete_run(monkeypatch):
    """A complete run whose "report: PATH" line stdout's encoding could not spell (a Latin-1
    PYTHONIOENCODING, an --out whose bytes the C locale decoded to surrogates) ended with exit 2,
    "configuration error: 'latin-1' codec can't encode ..."; the line is printed with escapes and
    the run's own code stands."""
    import io
    import warnings

    import pytest

    from experiments import cli

    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="latin-1", errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(cli, "main", lambda: print("report: /r\udcc3\udca9sultat/report.md\ncaf\u00e9") or 0)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    with warnings.catch_warnings(), pytest.raises(SystemExit) as end:       # (console sets both)
        cli.console()
    stdout.flush()
    assert end.value.code == 0
    assert raw.getvalue() == b"report: /r\\udcc3\\udca9sultat/report.md\ncaf\xe9\n"


def test_a_complete_scan_whose_path_the_locale_could_not_decode_is_complete_on_its_rerun(tmp_path):
    """A store path holding bytes the locale could not decode (surrogates in the str): its
    report.md was written with them as they were, but the rerun compared it with the report
    encoded strictly, and ended in UnicodeEncodeError. Both sides are `store.text_bytes` now:
    the rerun is "already complete", its report kept."""
    from experiments import scan
    from scan_configs import TOML

    (tmp_path / "s.toml").write_text(TOML)
    out = os.path.join(str(tmp_path), os.fsdecode(b"st\xe9"))
    scan.run(str(tmp_path / "s.toml"), out, log=lambda s: None)
    said = []
    scan.run(str(tmp_path / "s.toml"), out, log=said.append)
    assert any("already complete" in s for s in said) and not any("rewrote" in s for s in said), said
