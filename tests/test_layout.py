"""The layers a reader sees from the folder names, and what importing the packages does.

dmft <- networks <- validation <- experiments <- scripts: a module imports only its own
layer and the layers before it, and never another module's underscored name."""

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ["dmft", "networks", "validation", "experiments", "scripts"]


def _modules():
    for layer in LAYERS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, layer)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    if rel.endswith(".__init__"):
                        rel = rel[: -len(".__init__")]
                    yield layer, rel, path


def _imports(path, module):
    """(imported module, imported names) for every import in the file, relative ones resolved."""
    tree = ast.parse(pathlib.Path(path).read_text(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            out.append((base, [a.name for a in node.names]))
    return out


def test_every_layer_imports_only_layers_below_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for layer, module, path in _modules():
        for target, _ in _imports(path, module):
            top = target.split(".")[0]
            if top in rank and rank[top] > rank[layer]:
                bad.append(f"{module} imports {target}")
    assert not bad, "a lower layer imports a higher one:\n" + "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = []
    for _, module, path in _modules():
        for target, names in _imports(path, module):
            if target.split(".")[0] not in LAYERS or target == module:
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{module}: from {target} import {n}")
            if any(p.startswith("_") and not p.startswith("__") for p in target.split(".")):
                bad.append(f"{module}: imports the private module {target}")
        # attribute access to another project module's private name: mod._name
        tree = ast.parse(pathlib.Path(path).read_text())
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in LAYERS:
                        aliases[a.asname or a.name.split(".")[0]] = a.name
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                if base.split(".")[0] in LAYERS:
                    for a in node.names:
                        aliases[a.asname or a.name] = f"{base}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{module}: {node.value.id}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(set(bad)))


def _python(code, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_importing_the_packages_changes_no_global_state():
    r = _python("""
        import matplotlib
        matplotlib.use("svg")
        import jax
        before = (jax.config.jax_enable_x64, jax.config.jax_numpy_rank_promotion)
        import dmft, networks, validation, experiments
        from experiments import cli, scan, grok, jobs, report
        import validation.plots
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert (jax.config.jax_enable_x64, jax.config.jax_numpy_rank_promotion) == before
        import matplotlib.pyplot
        assert matplotlib.get_backend() == "svg"
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_a_results_folder_named_like_a_package_does_not_shadow_it(tmp_path):
    """A results directory holds theory/ and networks/ folders; Python started inside it
    must still import the packages, not those folders."""
    (tmp_path / "networks").mkdir()
    (tmp_path / "theory").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", "import networks; print(networks.__file__)"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith(os.path.join("networks", "__init__.py")), r.stdout


@pytest.mark.parametrize("name", ["dmft", "networks", "validation", "experiments"])
def test_every_package_has_a_docstring_and_all(name):
    mod = __import__(name)
    assert mod.__doc__ and len(mod.__doc__) > 80
    assert isinstance(getattr(mod, "__all__", None), list)


@pytest.mark.parametrize("budget, verdict", [("600", "exit 0 after"), ("10", "skipped")])
def test_the_device_script_runs_every_part_within_its_budget(tmp_path, budget, verdict):
    """`scripts/device_check.sh` with a stand-in Python that does nothing (`true`): every part
    runs and is summarized; with a budget too short for any part, every part is skipped, and said
    to be."""
    env = {**os.environ, "PYTHON": "true"}
    run = subprocess.run(["bash", os.path.join(ROOT, "scripts", "device_check.sh"), str(tmp_path / "out"), budget],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    parts = ["env", "check_devices", "tests_first", "tests_rest", "bench_dmft", "bench_networks", "bench_scan",
             "bench_memory"]
    assert [line.split(":")[0] for line in lines] == parts + ["total"]
    assert all(verdict in line for line in lines[:-1]), lines
