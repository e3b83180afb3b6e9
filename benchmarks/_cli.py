"""The command line of a benchmark script that takes few or no options.

Every benchmark runs for minutes to hours, so ``--help`` must print what the script does and stop,
and an option it does not know must stop it with an error rather than start the run.
"""

from __future__ import annotations

import argparse


def options(doc: str | None, argv=None, flags: dict[str, str] | None = None) -> argparse.Namespace:
    """Parse a benchmark's command line: its docstring is the ``--help`` text.

    Parameters
    ----------
    doc : str or None
        The script's docstring (``__doc__``), shown by ``--help``.
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).
    flags : dict, optional
        On/off options the script takes, ``{"--quick": "what it does"}``; each becomes a bool
        attribute (``--quick`` → ``quick``).

    Returns
    -------
    argparse.Namespace
        The flags given. ``--help`` exits 0 after printing ``doc``; an unknown option exits 2.

    Examples
    --------
    >>> options("Times the tracker.", ["--quick"], {"--quick": "fewer frames"}).quick
    True
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, text in (flags or {}).items():
        parser.add_argument(name, action="store_true", help=text)
    return parser.parse_args(argv)


def save(results_dir, name: str, res: dict, write_md) -> int:
    """Write a benchmark's figures: ``name.json`` (``res``) and, by ``write_md(res)``, ``name.md``
    in ``results_dir``; print the Markdown. Returns 0, the script's exit status.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> save(d, "x", {"a": 1}, lambda r: (d / "x.md").write_text(f"a = {r['a']}"))
    a = 1
    0
    """
    import json
    from pathlib import Path

    (Path(results_dir) / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    write_md(res)
    print((Path(results_dir) / f"{name}.md").read_text())
    return 0
