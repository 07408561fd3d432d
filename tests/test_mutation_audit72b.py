"""Tests from a mutation audit of the library changes since 240983f (the `dmft` entry point that
holds a Ctrl-C while the libraries load, `interrupted_import` and `RECEIVED`, the command's
interrupted-import handling): each kills a mutant (a dropped handler, append, clear or branch, a
signal read as SIGINT) that the earlier tests let pass, on a claim the code's docstrings, comments
and messages make. Fake jobs and hand-made exception chains (nothing compiled, no subprocess)."""

import signal
import threading

import pytest

import experiments
from experiments import cli


@pytest.fixture
def received():
    """`experiments.RECEIVED` emptied before and after (the command's and `_ctrl_c`'s list)."""
    experiments.RECEIVED.clear()
    yield experiments.RECEIVED
    experiments.RECEIVED.clear()


def test_once_loaded_a_ctrl_c_is_noted_and_an_ignored_one_stays_ignored(monkeypatch, received):
    """After the libraries have loaded, `console` leaves Ctrl-C to `_ctrl_c`: a KeyboardInterrupt,
    its signal noted in `RECEIVED` (so that a bare ImportError a C extension raised after printing
    it is an interruption, SIGINT's); the holding handler is not left in place (a Ctrl-C in the job
    would be lost). Where SIGINT was not Python's handler (ignored: a background job), it is left as
    it was."""
    found = []
    monkeypatch.setattr(cli, "console", lambda: found.append(signal.getsignal(signal.SIGINT)))
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        experiments.console()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        experiments.console()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert found == [experiments._ctrl_c, signal.SIG_IGN], found
    with pytest.raises(KeyboardInterrupt):
        experiments._ctrl_c(signal.SIGINT, None)
    assert received == [signal.SIGINT]
    assert experiments.interrupted_import(ImportError("the extension failed to import")) == signal.SIGINT


def _raised_while_handling(first):
    """An ImportError raised in the handler of `first` (chained implicitly: __context__)."""
    try:
        try:
            raise first
        except BaseException:
            raise ImportError("failed to import")
    except ImportError as err:
        return err


def test_the_signal_behind_an_import_error_is_found_in_any_chain_and_nothing_else_is(received):
    """`interrupted_import` follows the chain of ImportErrors through __cause__ and __context__ (an
    ImportError raised while handling the Ctrl-C, the usual way) to the interruption and gives its
    own signal (a SIGTERM's is 15: exit 143, not 130); a cycle of ImportErrors ends; any other
    error is None, even after the command received a signal."""
    assert _raised_while_handling(KeyboardInterrupt()).__cause__ is None
    assert experiments.interrupted_import(_raised_while_handling(KeyboardInterrupt())) == signal.SIGINT
    outer, inner = ImportError("outer"), ImportError("inner")
    outer.__cause__, inner.__context__ = inner, cli._Terminated(signal.SIGTERM)
    assert experiments.interrupted_import(outer) == signal.SIGTERM
    a, b = ImportError("a"), ImportError("b")
    a.__cause__, b.__cause__ = b, a
    found = []
    looked = threading.Thread(target=lambda: found.append(experiments.interrupted_import(a)), daemon=True)
    looked.start()
    looked.join(2)
    assert found == [None], "a cycle of ImportErrors was followed forever"
    received.append(signal.SIGTERM)
    assert experiments.interrupted_import(ValueError("not an import")) is None
    assert experiments.interrupted_import(KeyboardInterrupt()) is None


def test_an_import_error_is_an_interruption_only_for_this_runs_signals(monkeypatch, capsys, received):
    """`main` empties `RECEIVED` (this run's interruptions): a signal an earlier run in the process
    received does not make a later bare ImportError an interruption (re-raised: a bug's
    traceback). One chained to a Ctrl-C reads as a Ctrl-C's: "dmft JOB: interrupted", no signal
    named (a SIGTERM's names it), exit 130."""
    def bare(args):
        raise ImportError("No module named 'matplotlib'")

    def chained(args):
        raise ImportError("matplotlib's ft2font failed to import") from KeyboardInterrupt()

    argv = ["scan", "--no-progress", "--compile-cache", "off"]
    received.append(signal.SIGTERM)                 # (an earlier run's)
    monkeypatch.setitem(cli._JOBS, "scan", bare)
    with pytest.raises(ImportError, match="matplotlib"):
        cli.main(argv)
    capsys.readouterr()
    monkeypatch.setitem(cli._JOBS, "scan", chained)
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == "dmft scan: interrupted\n"
