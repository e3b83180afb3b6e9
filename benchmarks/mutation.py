"""Mutation testing of the core modules: how many planted bugs does the test suite catch?

For each core module, mutmut (3.x) plants small bugs one at a time (``<`` for ``<=``, ``+ 1`` on a
constant, an argument dropped, a return value replaced by ``None`` …) into a copy of the committed
tree and runs the tests that exercise the mutated function. A mutant is *killed* when a test fails
(or the run times out), *survived* when every test still passes, *no tests* when no test of the
module's test files reaches it. The mutation score is ``(killed + timeout) / (killed + timeout +
survived + no tests)``.

The tree is ``git archive HEAD`` (committed code only) extracted under
``benchmarks/_cache/mutation/<module>``; mutmut keeps its state there, so a run stopped by
``--minutes`` (or Ctrl-C) resumes where it stopped and only re-tests functions that changed since
(``--fresh`` starts over: needed after modules are renamed).
Writes ``benchmarks/results/mutation.md`` and ``mutation.json`` from whatever has been checked so
far (modules not yet run keep their last figures; unfinished modules are marked).

A full pass takes hours on 2 cores, and a pass stopped by ``--minutes`` has checked the first
functions of each file only, which says little of the rest. ``--sample N`` instead checks N mutants
drawn at random (``--seed``) from all of a module's mutants, with fresh state, and estimates the
score with its 95 % (Wilson) interval: every part of the module is represented, and a module of
7,000 mutants is scored in minutes.

Needs mutmut: ``pip install -e ".[mutation]"``. Not part of CI.

Run: ``python benchmarks/mutation.py [MODULE ...] [--sample N] [--max-children N] [--minutes M]``
(modules: {modules}).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from committed_tree import extract

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "_cache" / "mutation"
RESULTS = ROOT / "benchmarks" / "results"

#: module → (files mutated, glob patterns relative to the repository; tests run against them).
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "locate": (["stemflow/locating.py"], ["tests/test_locate.py", "tests/test_find.py"]),
    "chem": (["stemflow/chem/*"], ["tests/test_chem.py", "tests/test_prior.py", "tests/test_find.py"]),
    "track": (["stemflow/tracking/*"], ["tests/test_track.py"]),
    "parallel/output": (["stemflow/parallel/output.py"], ["tests/test_parallel.py"]),
    "io": (["stemflow/io/*"], ["tests/test_io.py", "tests/test_simulate_write.py"]),
}
__doc__ = __doc__.format(modules=", ".join(MODULES))

#: mutmut's exit codes per mutant (``mutmut.stats.status_by_exit_code``), folded into our columns.
_STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
           36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
           None: "not checked"}


def _configure(work: Path, mutate: list[str], tests: list[str]) -> None:
    """Append mutmut's settings for one module to the copy's ``pyproject.toml``."""
    py = work / "pyproject.toml"
    text = py.read_text().split("\n[tool.mutmut]")[0].rstrip() + "\n"
    q = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"  # noqa: E731
    text += ("\n[tool.mutmut]\n"
             'source_paths = ["stemflow/"]\n'
             f"only_mutate = {q(mutate)}\n"
             f"pytest_add_cli_args_test_selection = {q(tests)}\n"
             'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]\n'
             # mutants run in processes forked from a server that never ran a test: forking the
             # process that ran the suite (Dask thread pools, torch) can deadlock a mutant
             'process_isolation = "forkserver"\n')
    py.write_text(text)


def _all_mutants(name: str, work: Path) -> list[str]:
    """Every mutant of the module's files, as mutmut names them (from its ``.meta`` files)."""
    return sorted(key for meta in _metas(name, work) for key in json.loads(meta.read_text())["exit_code_by_key"])


def _metas(name: str, work: Path) -> list[Path]:
    mutate, _ = MODULES[name]
    metas: list[Path] = []
    for pattern in mutate:
        metas += sorted((work / "mutants").glob(pattern + ".meta") if not pattern.endswith("*")
                        else (work / "mutants").glob(pattern[:-1] + "*.py.meta"))
    return metas


def _mutmut(work: Path, args: list[str], log: Path, minutes: float | None) -> bool:
    """Run ``mutmut ARGS`` in ``work``; False when stopped by ``minutes`` or failed."""
    cmd = [sys.executable, "-m", "mutmut", *args]
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=work, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            proc.wait(timeout=None if minutes is None else minutes * 60)
            return proc.returncode == 0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return False


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (round(max(0.0, mid - half), 3), round(min(1.0, mid + half), 3))


def _run_sample(name: str, n: int, seed: int, max_children: int, minutes: float | None) -> dict:
    """Score ``n`` mutants of the module drawn at random, from fresh state."""
    import shutil

    mutate, tests = MODULES[name]
    work = CACHE / (name.replace("/", "_") + "_sample")
    if work.exists():
        shutil.rmtree(work)
    commit = extract("HEAD", work)
    _configure(work, mutate, tests)
    log = work / "mutmut.log"
    t0 = time.perf_counter()
    print(f"[{name}] sampling {n} mutants in {work} (log: {log})", flush=True)
    # A name that matches no mutant: mutmut generates every mutant and maps the tests, runs none.
    _mutmut(work, ["run", "--max-children", str(max_children), "no-such-mutant"], log, None)
    everyone = _all_mutants(name, work)
    if not everyone:
        raise RuntimeError(f"mutmut made no mutants of {mutate} (see {log})")
    chosen = sorted(random.Random(seed).sample(everyone, min(n, len(everyone))))
    finished = _mutmut(work, ["run", "--max-children", str(max_children), *chosen], log, minutes)
    row = _collect(name, work, only=set(chosen))
    caught = row["counts"].get("killed", 0) + row["counts"].get("timeout", 0)
    judged = caught + row["counts"].get("survived", 0) + row["counts"].get("no tests", 0)
    row.update(commit=commit, seconds=round(time.perf_counter() - t0, 1),
               finished=finished and not row["counts"].get("not checked"), tests=tests, mutated=mutate,
               sample=len(chosen), population=len(everyone), seed=seed, interval=wilson(caught, judged))
    return row


def _run_module(name: str, max_children: int, minutes: float | None, fresh: bool = False) -> dict:
    mutate, tests = MODULES[name]
    work = CACHE / name.replace("/", "_")
    if fresh and work.exists():
        import shutil

        shutil.rmtree(work)
    commit = extract("HEAD", work)                  # the committed tree only
    _configure(work, mutate, tests)
    log = work / "mutmut.log"
    t0 = time.perf_counter()
    print(f"[{name}] mutmut in {work} (log: {log})", flush=True)
    finished = _mutmut(work, ["run", "--max-children", str(max_children)], log, minutes)
    row = _collect(name, work)
    row.update(commit=commit, seconds=round(time.perf_counter() - t0, 1), finished=finished,
               tests=tests, mutated=mutate)
    if row["counts"].get("not checked"):
        row["finished"] = False
    return row


def _collect(name: str, work: Path, only: set | None = None) -> dict:
    """Read mutmut's per-file state (``mutants/**/*.py.meta``) for the module's files (the mutants
    ``only``, when given)."""
    counts: Counter = Counter()
    survivors: dict[str, int] = defaultdict(int)
    untested: dict[str, int] = defaultdict(int)
    for meta in _metas(name, work):
        data = json.loads(meta.read_text())
        for key, code in data["exit_code_by_key"].items():
            if only is not None and key not in only:
                continue
            status = _STATUS.get(code, "suspicious")
            counts[status] += 1
            func = key.split("__mutmut_")[0].replace(".x_", ".").replace(".xǁ", ".")
            if status == "survived":
                survivors[func] += 1
            elif status == "no tests":
                untested[func] += 1
    caught = counts["killed"] + counts["timeout"]
    judged = caught + counts["survived"] + counts["no tests"]
    return {"module": name, "counts": dict(counts), "mutants": sum(counts.values()),
            "score": round(caught / judged, 3) if judged else None,
            "survivors_by_function": dict(sorted(survivors.items(), key=lambda kv: -kv[1])),
            "untested_by_function": dict(sorted(untested.items(), key=lambda kv: -kv[1]))}


def _write(rows: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mutation.json").write_text(json.dumps(rows, indent=1) + "\n")
    cols = ["killed", "timeout", "survived", "no tests", "not checked"]
    lines = ["# Mutation score of the core modules", "",
             "Written by `benchmarks/mutation.py` (mutmut 3; see its docstring for the method). "
             "Score = (killed + timeout) / (killed + timeout + survived + no tests); "
             "a module marked *partial* still has mutants not checked. *Sampled*: the mutants "
             "checked are drawn at random from all of the module's (`--sample`), and the score "
             "is given with its 95 % Wilson interval.", "",
             "| module | tests run | mutants | " + " | ".join(cols) + " | score (95 % interval) | commit | minutes | date |",
             "|---|---|---:|" + "---:|" * len(cols) + "---:|---|---:|---|"]
    for name in MODULES:
        r = rows.get(name)
        if r is None:
            lines.append(f"| {name} | not run yet |" + " |" * (len(cols) + 4))
            continue
        c = r["counts"]
        score = "—" if r["score"] is None else f"{r['score']:.3f}"
        if r.get("interval"):
            lo, hi = r["interval"]
            score += f" ({lo:.2f}–{hi:.2f})"
        mark = "" if r["finished"] else " (partial)"
        n = r["mutants"]
        if r.get("sample"):
            mark += f" (sampled, seed {r['seed']})"
            n = f"{r['sample']} of {r['population']}"
        tests = ", ".join(Path(t).name for t in r["tests"])
        lines.append(f"| {name}{mark} | {tests} | {n} | "
                     + " | ".join(str(c.get(k, 0)) for k in cols)
                     + f" | {score} | {r['commit'][:8]} | {r['seconds'] / 60:.0f} | {r.get('date', '')} |")
    lines += ["", "## Functions with the most surviving mutants", "",
              "Where the tests are weakest; `mutmut show NAME` in the module's work directory "
              "shows each mutant.", ""]
    for name in MODULES:
        r = rows.get(name)
        if not r:
            continue
        top = list(r["survivors_by_function"].items())[:8]
        if top:
            lines.append(f"- **{name}**: " + ", ".join(f"`{f.split('.')[-1]}` {n}" for f, n in top))
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", metavar="MODULE",
                    help=f"modules to test (default all: {', '.join(MODULES)})")
    ap.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="mutants tested in parallel (default: cores - 1)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="stop each module after this long; rerun to resume")
    ap.add_argument("--sample", type=int, default=None, metavar="N",
                    help="check N mutants drawn at random from each module's, from fresh state, and "
                         "estimate the score with its 95 %% interval")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample's draw (default 0)")
    ap.add_argument("--fresh", action="store_true",
                    help="forget the module's earlier state (needed after modules were renamed: mutmut "
                         "then keeps the old modules' test map, and mutants of the new names meet too few tests)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        ap.error(f"unknown module(s) {unknown}; known: {', '.join(MODULES)}")
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("mutmut is not installed: pip install -e '.[mutation]'", file=sys.stderr)
        return 2
    path = RESULTS / "mutation.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    for name in args.modules or MODULES:
        if args.sample:
            rows[name] = _run_sample(name, args.sample, args.seed, args.max_children, args.minutes)
        else:
            rows[name] = _run_module(name, args.max_children, args.minutes, args.fresh)
        rows[name]["date"] = _dt.date.today().isoformat()
        _write(rows)
        r = rows[name]
        print(f"[{name}] score {r['score']} over {r['mutants']} mutants {r['counts']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
