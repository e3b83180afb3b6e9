"""A commit's tree as files, for benchmarks that run or compare committed code (``git archive``)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def resolve(rev: str) -> str:
    """The full hash of ``rev`` (a commit, tag, branch or ``HEAD``)."""
    return subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def extract(rev: str, dest: Path) -> str:
    """Write the committed tree of ``rev`` over ``dest`` (created if needed); return its hash."""
    commit = resolve(rev)
    blob = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, check=True,
                          capture_output=True).stdout
    Path(dest).mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return commit
