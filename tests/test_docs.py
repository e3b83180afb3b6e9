"""The documentation site builds offline, without warnings, with its examples executed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("mkdocs_gallery", reason="the docs extra is not installed (pip install -e '.[docs]')")


def test_the_site_builds_strictly_with_its_examples_run(tmp_path):
    # a copy of the sources, so that the build's generated pages never touch the checkout
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "site", "generated", "_cache",
                                                             "__pycache__", "*.zarr", "demo_out"))
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", MPLBACKEND="Agg", PYTHONPATH=str(src))
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=src, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    site = tmp_path / "site"
    page = (site / "generated" / "gallery" / "plot_01_find_identify_track" / "index.html").read_text()
    assert "Out:" in page and "Si1C3" in page                     # the example ran and printed its defects
    assert (site / "results" / "real_data" / "index.html").is_file()  # the measured results are pages
    api = (site / "api" / "index.html").read_text()
    assert "find_atoms" in api and "pixel_size" in api            # the reference comes from the docstrings
