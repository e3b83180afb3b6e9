"""mkdocs hooks: the benchmark result tables (``benchmarks/results/*.md``) become pages of the site.

The user guide links them as ``../benchmarks/results/NAME.md`` (which reads on a code host); in the
site those links point to ``results/NAME.md``, generated here from the same files, so the site
shows exactly what the benchmark scripts wrote. Links to benchmark scripts become code names.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
_RESULT_LINK = re.compile(r"\]\(\.\./benchmarks/results/([\w.-]+\.md)(#[\w-]*)?\)")
_SCRIPT_LINK = re.compile(r"\[([^\]]+)\]\(\.\./benchmarks/([\w./-]+\.py)\)")


def on_files(files, config):
    for md in sorted(RESULTS.glob("*.md")):
        text = md.read_text(encoding="utf-8").replace("](../../docs/images/", "](../images/")
        text = text.replace("](docs/images/", "](../images/")
        text = re.sub(r"(?<![(/])docs/images/([\w.-]+\.png)", r"[\1](../images/\1)", text)
        files.append(File.generated(config, f"results/{md.name}", content=text))
    return files


def on_page_markdown(markdown, page, config, files):
    depth = page.file.src_uri.count("/")
    up = "../" * depth
    markdown = _RESULT_LINK.sub(lambda m: f"]({up}results/{m.group(1)}{m.group(2) or ''})", markdown)
    return _SCRIPT_LINK.sub(lambda m: f"{m.group(1)} (`benchmarks/{m.group(2)}`)", markdown)
