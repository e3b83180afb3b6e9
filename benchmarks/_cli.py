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
