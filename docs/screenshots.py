"""Screenshots of an HTML report and of the documentation site, with headless Chromium.

Makes a small run (a simulated 16-frame movie through ``stemflow.run`` on a local cluster), writes
its ``report.html``, and photographs it and the built site (``make docs`` first, for ``site/``):
``docs/images/report_screenshot.png`` and ``docs/images/docs_screenshot.png``. Needs a
``chromium`` (or ``chromium-browser``/``google-chrome``) on the PATH (``apt install chromium``).

Run: ``python docs/screenshots.py`` (about a minute).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no Chromium found: apt install chromium (or set PATH)")


def shoot(url: str, out: Path, size=(1280, 2000)) -> Path:
    """Screenshot ``url`` (file:// or http://) into ``out`` with headless Chromium."""
    cmd = [_browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", "--virtual-time-budget=5000", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode or not out.exists():
        raise SystemExit(f"chromium failed ({r.returncode}): {r.stderr[-2000:]}")
    return out


def main() -> int:
    if __package__ is None:
        sys.path.insert(0, str(ROOT))
    import stemflow
    from stemflow.io import write_movie

    work = Path(tempfile.mkdtemp())
    movie = stemflow.simulate_movie("graphene", frames=16, shape=(256, 256), pixel_size=0.012, seed=4,
                                    drift=(0.3, -0.2), defects={"Si1C3": 4, "Si1C4": 1, "V1": 2},
                                    rates={"hop": 0.15, "switch34": 0.1, "vacancy": 0.1})
    paths = write_movie(movie, work / "movie.zarr", progress=False, frame_chunk_mb=0.6)
    stemflow.run(paths["store"], work / "run", n_workers=2, progress=False)
    IMAGES.mkdir(parents=True, exist_ok=True)
    print("wrote", shoot((work / "run" / "report.html").as_uri(), IMAGES / "report_screenshot.png"))
    site = ROOT / "site" / "generated" / "gallery" / "plot_01_find_identify_track" / "index.html"
    if site.exists():
        print("wrote", shoot(site.as_uri(), IMAGES / "docs_screenshot.png", (1280, 1800)))
    else:
        print(f"no {site}: run `make docs` first for the site's screenshot", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
