"""Run the README's tour as written, in a fresh directory: every command of its bash blocks, then
its Python blocks, in order; report each with its exit status and time. Exit 1 if any fails.

Run: ``python docs/check_readme.py [--keep]`` from a checkout whose ``.venv`` is set up (``make
demo`` does it). Several minutes on 2 cores (it simulates, runs and evaluates as the tour says).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


#: An HTML comment on the line before a block that the tour shows but cannot run (it needs the
#: reader's own files); the comment says why.
SKIP = "<!-- tour: not run"


def blocks(text: str) -> list[tuple[str, str]]:
    r"""(language, code) of the fenced blocks of the tour: from '## A short tour' to the next '## ',
    less those marked :data:`SKIP` on the line before.

    Examples
    --------
    >>> blocks("## A short tour\n```bash\nls\n```\n<!-- tour: not run (your files) -->\n```bash\nx\n```\n## Next")
    [('bash', 'ls\n')]
    """
    start = text.index("## A short tour")
    end = text.find("\n## ", start + 5)
    tour = text[start:end if end > 0 else None]
    return [(lang, code) for before, lang, code in re.findall(r"([^\n]*)\n```(bash|python)\n(.*?)```", tour, flags=re.S)
            if not before.strip().startswith(SKIP)]


def commands(code: str) -> list[str]:
    """Shell commands of a bash block: continuation lines joined, comment-only lines dropped."""
    out, cur = [], ""
    for line in code.splitlines():
        if cur:
            line = cur + " " + line.strip()
            cur = ""
        if line.rstrip().endswith("\\"):
            cur = line.rstrip()[:-1]
            continue
        if line.strip() and not line.strip().startswith("#"):
            out.append(line.strip())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="readme_tour_"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    failed = 0
    for lang, code in blocks((ROOT / "README.md").read_text()):
        steps = commands(code) if lang == "bash" else [code]
        for step in steps:
            t0 = time.perf_counter()
            cmd = ["bash", "-c", step] if lang == "bash" else [sys.executable, "-c", step]
            r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            ok = r.returncode == 0
            failed += not ok
            shown = step if lang == "bash" else "(python block)"
            print(f"{'ok ' if ok else 'FAIL'} {time.perf_counter() - t0:6.1f} s  {shown[:110]}", flush=True)
            if not ok:
                print((r.stderr or r.stdout)[-3000:], file=sys.stderr)
    print(f"{'all passed' if not failed else f'{failed} failed'}; working directory {work}"
          + ("" if args.keep else " (removed)"))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
