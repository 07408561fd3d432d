"""Configuration input in unusual but legal or plausible spellings: one clear ConfigError naming
the key and the value, or the same meaning as the usual spelling."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmft.errors import ConfigError
from experiments import jobs
from experiments.config import Field, coerce, read_toml

_NOT_NUMBERS = st.one_of(st.text(max_size=4), st.booleans(), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["floats", "ints"]), good=st.lists(st.integers(1, 9), min_size=0, max_size=4),
       bad=_NOT_NUMBERS, data=st.data())
def test_a_lists_bad_entry_is_named_with_its_index(kind, good, bad, data):
    """gamma0 = [1, "2"] said "sweep.gamma0: expected a number, got [1, '2'] (list)": the list,
    which is what the key expects, named as the wrong value. Now the entry and its index."""
    i = data.draw(st.integers(0, len(good)))
    value = good[:i] + [bad] + good[i:]
    what = "an integer" if kind == "ints" else "a number"
    with pytest.raises(ConfigError, match=f"^{re.escape(f'sweep.gamma0[{i}]: expected {what}, got {bad!r}')} "):
        coerce("sweep.gamma0", Field(kind, [1], "doc", 0.0), value)


def test_a_byte_order_mark_is_read_as_utf8(tmp_path):
    """A UTF-8 file saved with a byte order mark (Windows editors) was refused as "not valid TOML
    (Invalid statement (at line 1, column 1))"; it is the same configuration as without one."""
    text = '[train]\r\nsteps = 40\r\n[sweep]\r\ngamma0 = [0.5, 2]\r\n[task]\r\nname = "single_index"\r\n'
    plain, marked = tmp_path / "plain.toml", tmp_path / "marked.toml"
    plain.write_bytes(text.encode())
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_toml(marked) == read_toml(plain)
    assert jobs.load_config(marked) == jobs.load_config(plain)


_DLN_TINY = ["train.steps=4", "train.save_every=2", "train.seeds=2"]


@pytest.mark.parametrize("setting, match", [
    ("staircase.seeds=100000", r"^staircase\.seeds, model\.width: 100000 networks .* GiB"),
    ("staircase.steps=3000000000", r"^staircase\.steps: must be <= 2147483647, got 3000000000"),
    ("staircase.eta0=1e308", r"^staircase\.eta0 = 1e\+308, staircase\.steps = 20000: .*overflows"),
    ("train.steps=3000000000", r"^train\.steps: must be <= 2147483647, got 3000000000"),    # (said "steps must be")
])
def test_the_dln_staircase_settings_are_checked_before_any_network_trains(setting, match):
    """The staircase ensemble's schedule and memory were checked only when it trained, after the
    studies' networks and SDE had run: `dmft dln --set staircase.steps=3000000000` claimed the
    directory, trained, then failed "steps must be <= 2147483647" naming no section."""
    from experiments import dln

    with pytest.raises(ConfigError, match=match):
        dln.build(dln.load_config(None, [*_DLN_TINY, setting]))
    assert dln.build(dln.load_config(None, [*_DLN_TINY, "staircase.seeds=5000"]))


@settings(max_examples=20, deadline=None)
@given(value=st.one_of(st.integers(2 ** 63, 10 ** 400), st.integers(-10 ** 400, -2 ** 63),
                       st.floats(9.3e18, 1.7e308)))
def test_an_integer_beyond_any_setting_is_refused_in_short(value):
    """theory.samples = 1e308 passed as an integer of 309 digits and ended the preflight in
    "OverflowError: int too large to convert to float"; any integer setting past 2^63 - 1 is
    refused, the value in short."""
    with pytest.raises(ConfigError, match=r"^theory\.samples: must be within \+-\(2\^63 - 1\), got (\S{1,12}|a (negative )?\d{3}-digit integer)$"):
        coerce("theory.samples", Field("int", 8, "doc", 1), value)
    assert coerce("theory.samples", Field("int", 8, "doc", 1), float(2 ** 62)) == 2 ** 62


def test_a_huge_sample_count_is_a_configuration_error(tmp_path, capsys):
    from experiments import cli

    assert cli.main(["solve", "--set", "theory.samples=1e308", "--out", str(tmp_path / "o"), "--no-progress"]) \
        == cli.EXIT_CONFIG
    assert "theory.samples: must be within" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("override, hint", [
    ("train.stepz=3", "unknown key train.stepz (train.steps?);"),                # a typo
    ("train.Steps=3", "unknown key train.Steps (train.steps?);"),                # another case
    ("train.gamma0=[1]", "unknown key train.gamma0 (sweep.gamma0?);"),           # another section's key
    ("Train.steps=3", "unknown section [Train] ([train]?);"),
    ("sweeps.gamma0=[1]", "unknown section [sweeps] ([sweep]?);"),
    ("train.xyz=1", "unknown key train.xyz; known in [train]: eta0, steps,"),   # nothing close: no guess
])
def test_an_unknown_name_says_what_was_likely_meant(override, hint):
    """An unknown key or section listed the known ones only: a key in the wrong section (gamma0
    in [train]), a typo or another case now names the likely one."""
    with pytest.raises(ConfigError, match=re.escape(hint)):
        jobs.load_config(None, [override])


def test_a_key_outside_any_section_names_its_section(tmp_path):
    path = tmp_path / "top.toml"
    path.write_text("steps = 3\n")
    with pytest.raises(ConfigError, match=re.escape("unknown section [steps] (train.steps?);")):
        jobs.load_config(path)


@pytest.mark.parametrize("override, hint", [
    ("task.seeds=3", "unknown key task.seeds (task.seed or simulate.seeds?);"),          # a plural typo
    ("theory.seeds=3", "unknown key theory.seeds (theory.seed or simulate.seeds?);"),
])
def test_a_key_close_to_its_own_sections_is_named_before_the_other_sections(override, hint):
    """A key of the wrong spelling in its own section that another section has spelled so: the
    hint named only the other section ("task.seeds (simulate.seeds?)", the ensemble's size, where
    task.seed was meant); now its own section's close name first, then the others."""
    with pytest.raises(ConfigError, match=re.escape(hint)):
        jobs.load_config(None, [override])


def test_a_bad_byte_after_a_byte_order_mark_is_named_at_its_place_in_the_file(tmp_path):
    """The byte order mark is read (utf-8-sig), and the decoder counts from after it: a bad byte at
    the file's byte 5 was said to be at byte 2."""
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xef\xbb\xbfa=\xff\n")
    with pytest.raises(ConfigError, match=r"not a UTF-8 text file \(byte 5\)"):
        read_toml(path)


def test_the_staircases_memory_refusal_advises_only_what_it_reads():
    """The staircase's 150 log-spaced saves and its probe (none) are fixed: its refusal advised
    "train.probe, or save less often", neither of which changes its memory."""
    from experiments import dln

    with pytest.raises(ConfigError) as caught:
        dln.build(dln.load_config(None, [*_DLN_TINY, "staircase.seeds=100000"]))
    said = str(caught.value)
    assert said.endswith("use fewer staircase.seeds, a smaller model.width or train.batch_size"), said
    with pytest.raises(ConfigError, match=r"train\.probe, or save less often$"):
        dln.build(dln.load_config(None, ["train.steps=4000", "train.save_every=2", "train.seeds=100000"]))


@pytest.mark.parametrize("value, said", [(1e30, "1e+30"), (1e308, "a 309-digit integer"), (2 ** 63, "9.223e+18")])
def test_an_integer_past_the_limit_of_a_field_with_a_maximum_names_that_maximum(value, said):
    """train.steps = 1e30 said "must be within +-(2^63 - 1)" (the bound of every integer setting)
    where train.steps' own maximum, 2^31 - 1, is the one to keep within (tests/test_cli_faults.py
    pinned it so)."""
    with pytest.raises(ConfigError, match=rf"^train\.steps: must be <= 2147483647, got {re.escape(said)}$"):
        jobs.load_config(None, [f"train.steps={value!r}"])


def test_an_integer_of_more_digits_than_python_reads_names_its_key_or_file(tmp_path):
    """An integer literal past Python's 4300-digit limit said "configuration error: Exceeds the
    limit (4300 digits) ..." naming neither the key nor the file."""
    digits = "9" * 4400
    with pytest.raises(ConfigError, match=r"^override train\.steps=\.\.\.: Exceeds the limit"):
        jobs.load_config(None, [f"train.steps={digits}"])
    path = tmp_path / "big.toml"
    path.write_text(f"[train]\nsteps = {digits}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not valid TOML \(Exceeds the limit"):
        jobs.load_config(path)
