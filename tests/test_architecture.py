"""The floor plan holds: layers, one owner per table, light imports (DESIGN.md, docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stemflow
from stemflow import tables

PKG = Path(stemflow.__file__).parent

#: Where Dask may be imported: the parallel layer, io (lazy arrays), the command line and the demo.
DASK_ALLOWED = ("stemflow.parallel", "stemflow.io", "stemflow.cli", "stemflow.demo")


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(mod: str, path: Path, modules: dict) -> list[str]:
    """Every module ``mod`` imports, at any depth of the file (lazy imports count), except in
    ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:
                full = f"{target}.{a.name}"
                out.append(full if full in modules else target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for mod, path in modules.items():
        deps = set()
        for t in _imports(mod, path, modules):
            while t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in modules and t != mod and not mod.startswith(t + "."):
                deps.add(t)
        graph[mod] = deps
    return graph


def test_dask_only_in_parallel_and_io():
    modules = _modules()
    offenders = {}
    for mod, path in modules.items():
        if mod.startswith(DASK_ALLOWED):
            continue
        used = sorted({t for t in _imports(mod, path, modules) if t.split(".")[0] in ("dask", "distributed")})
        if used:
            offenders[mod] = used
    assert offenders == {}


def test_no_import_cycles():
    graph = _graph()
    state, cycles = {}, []

    def visit(v, stack):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                visit(w, stack)
        stack.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v, [])
    assert cycles == []


def test_column_lists_live_in_tables():
    """No module but ``tables`` defines a ``*COLUMNS`` constant (a list of column names)."""
    found = []
    for mod, path in _modules().items():
        if mod == "stemflow.tables":
            continue
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for t in targets:
                if isinstance(t, ast.Name) and t.id.endswith("COLUMNS") and isinstance(node.value, (ast.List, ast.Tuple, ast.Dict)):
                    found.append(f"{mod}.{t.id}")
    assert found == []


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=300).stdout.strip()


def test_import_stemflow_does_not_import_torch():
    out = _fresh("import sys, stemflow, stemflow.io, stemflow.tables, stemflow.chem, stemflow.tracking\n"
                 "print('torch' in sys.modules)")
    assert out == "False"
    # ... and the lazy names still resolve, to the right objects
    out = _fresh("import sys, stemflow\nf = stemflow.find_atoms\nprint(f.__module__, 'torch' in sys.modules)")
    assert out == "stemflow.find True"


def test_xarray_probe_does_not_import_torch(tmp_path):
    path = tmp_path / "plain.nc"
    import xarray as xr

    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(path)
    out = _fresh(f"import sys, xarray as xr\nds = xr.open_dataset({str(path)!r})\n"
                 "print('stemflow' in xr.backends.list_engines(), 'torch' in sys.modules)")
    assert out == "True False"


def test_tables_conform_keeps_unknown_categories_and_orders_columns():
    df = pd.DataFrame({"label": ["dopant", "Si"], "x": [1, 2], "extra": [0, 0], "y": [3.0, 4.0]})
    out = tables.ATOMS.conform(df)
    assert list(out.columns) == ["y", "x", "label", "extra"]
    assert out["x"].dtype == np.float64
    assert list(out["label"].cat.categories) == ["lattice", "dopant", "vacancy", "Si"]
    assert out["label"].tolist() == ["dopant", "Si"]
    with pytest.raises(stemflow.errors.InputError, match=r"lacks column\(s\) \['label'\]"):
        tables.ATOMS.check(df.drop(columns="label"))


def test_parquet_metadata_round_trip(tmp_path):
    """A run's part carries its calibration: read back without the manifest, it still has it."""
    from stemflow import results, rundir
    from stemflow.parallel import output

    df = tables.ATOMS.empty()
    df.attrs.update(pixel_size=0.0123, lattice="ws2", model="default", not_json=object())
    output.write_part(tmp_path, 0, df)
    back = results.read_atoms(tmp_path / rundir.ATOMS_DIR)
    assert back.attrs["pixel_size"] == 0.0123 and back.attrs["lattice"] == "ws2"
    assert "not_json" not in back.attrs
    import pyarrow.parquet as pq

    meta = pq.read_schema(rundir.part_path(tmp_path, 0)).metadata
    assert b'"y_nm": "nm"' in meta[tables.METADATA_KEY]


def test_tables_examples_run():
    import doctest

    result = doctest.testmod(tables)
    assert result.attempted > 0 and result.failed == 0


def test_top_level_is_the_notebook_chain():
    import pkgutil

    names = stemflow.__all__
    assert len(names) <= 25 and len(set(names)) == len(names)
    assert {"open_stem", "find_atoms", "identify", "track", "run", "open_run", "virtual_image", "load_model",
            "score", "simulate_image"} <= set(names)
    # no public name is also a module of the package: `stemflow.track` is always the function
    modules = {m.name for m in pkgutil.iter_modules(stemflow.__path__)}
    assert sorted(set(names) & modules) == []
    for pkg in ("chem", "tracking", "simulate", "parallel", "io", "nn"):
        mod = __import__(f"stemflow.{pkg}", fromlist=["_"])
        subs = {m.name for m in pkgutil.iter_modules(mod.__path__)}
        assert sorted(set(getattr(mod, "__all__", [])) & subs) == [], pkg


def _check_documented(name: str, func) -> None:
    """``func`` has Parameters (when it takes any), Returns or Yields, and Examples, and its
    examples pass when run in its module's namespace."""
    import doctest
    import inspect

    doc = inspect.getdoc(func) or ""
    takes = [p for p in inspect.signature(func).parameters.values() if p.kind is not p.VAR_KEYWORD]
    sections = (["Parameters"] if takes else []) + [
        "Yields" if inspect.isgeneratorfunction(func) or "Yields\n---" in doc else "Returns", "Examples"]
    for section in sections:
        assert f"{section}\n----" in doc, f"{name} has no {section} section"
    tests = doctest.DocTestFinder(recurse=False).find(func, name, globs=dict(func.__globals__))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    assert runner.failures == 0, f"the example of {name} fails"


@pytest.mark.parametrize("name", stemflow.__all__)
def test_public_function_documents_units_and_runs_its_example(name):
    _check_documented(name, getattr(stemflow, name))


def test_no_private_name_is_imported_across_modules():
    found = []
    for mod, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__" and (
                    node.level or (node.module or "").startswith("stemflow")):
                found += [f"{mod}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []


#: Packages and modules whose public functions (their ``__all__``) are the documented API.
PUBLIC_MODULES = ("stemflow.chem", "stemflow.tracking", "stemflow.simulate", "stemflow.io", "stemflow.parallel",
                  "stemflow.results", "stemflow.detectors", "stemflow.tables", "stemflow.find", "stemflow.metrics",
                  "stemflow.locating", "stemflow.atomic", "stemflow.frames", "stemflow.rundir", "stemflow.nn",
                  "stemflow.lowdose", "stemflow.occupancy", "stemflow.registration", "stemflow.noise")


def _public_functions():
    import importlib
    import inspect

    seen = {}
    for m in PUBLIC_MODULES:
        mod = importlib.import_module(m)
        for n in getattr(mod, "__all__", []):
            f = getattr(mod, n, None)
            if inspect.isfunction(f) and f not in seen.values():
                seen[f"{m}.{n}"] = f
    return seen


@pytest.mark.parametrize("name", sorted(_public_functions()))
def test_every_public_function_documents_its_parameters_result_and_an_example_that_runs(name):
    _check_documented(name, _public_functions()[name])
