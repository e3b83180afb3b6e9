"""The benchmark scripts: ``make bench`` knows every one of them, and none starts a long run on
``--help`` or on an option it does not know."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_all_runs_every_benchmark_or_says_why_not():
    run_all = _run_all()
    names = {p.stem for p in SCRIPTS}
    listed, skipped = set(run_all.BENCHMARKS), set(run_all.NOT_RUN)
    assert not listed & skipped, f"both run and not run: {sorted(listed & skipped)}"
    assert names - listed - skipped == set(), f"benchmarks make bench does not know: {sorted(names - listed - skipped)}"
    assert (listed | skipped) - names == set(), f"listed but not there: {sorted((listed | skipped) - names)}"
    assert set(run_all.NEEDS) <= listed
    assert all(why.strip() for why in run_all.NOT_RUN.values())


def _parses_its_command_line(tree: ast.Module) -> bool:
    """Does the script build an argument parser (argparse, or ``_cli.options``)?"""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "ArgumentParser":
            return True
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "options":
            return True
    return False


@pytest.mark.parametrize("script", [p for p in SCRIPTS if 'if __name__ == "__main__"' in p.read_text()],
                         ids=lambda p: p.stem)
def test_every_benchmark_script_parses_its_command_line(script):
    assert _parses_its_command_line(ast.parse(script.read_text())), (
        f"{script.name} runs without reading its options: --help would start the benchmark")


def test_help_prints_the_docstring_and_an_unknown_option_stops_before_the_run():
    script = BENCH / "lowdose_movies.py"          # about 8 minutes when it runs
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Hops from low-dose movies: stemflow.find_atoms" in r.stdout
    assert "--quick" in r.stdout and "--dev" in r.stdout
    r = subprocess.run([sys.executable, str(script), "--qiuck"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unrecognized arguments: --qiuck" in r.stderr
