"""The stemflow command, run as a user would."""

import argparse
import subprocess
import sys

import pandas as pd
import pytest

from stemflow.cli import main


def test_simulate_then_info(tmp_path, capsys):
    out = tmp_path / "movie.zarr"
    rc = main(["simulate", "--lattice", "ws2", "--n-frames", "3", "--size", "160", "--pixel-size", "0.012",
               "--dose", "2e5", "--seed", "4", "--defects", "Mo_W=2,V_S=1", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "movie.atoms.parquet" in text and "movie.events.parquet" in text
    atoms = pd.read_parquet(tmp_path / "movie.atoms.parquet")
    assert sorted(atoms.frame.unique()) == [0, 1, 2]
    assert (atoms.defect == "Mo_W").sum() == 2 * 3
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "(3, 160, 160)" in info and "0.012" in info and "float32" in info


def test_find_names_heavy_atoms_of_the_elements_given(tmp_path, capsys):
    import numpy as np

    from stemflow.simulate import simulate_image

    sim = simulate_image("amorphous", 256, seed=5, pixel_size=0.015, dose=1e5, defects={"Pt1": 4, "Fe1": 4})
    np.save(tmp_path / "sac.npy", sim.image)
    out = tmp_path / "sac.parquet"
    assert main(["find", str(tmp_path / "sac.npy"), "--pixel-size", "0.015", "--lattice", "amorphous",
                 "--elements", "Pt, Fe", "--out", str(out)]) == 0
    atoms = pd.read_parquet(out)
    assert sorted(atoms["element"].astype(str)) == sorted(sim.atoms["element"].astype(str))
    # symbols in any case, and a .csv output written as CSV
    assert main(["find", str(tmp_path / "sac.npy"), "--pixel-size", "0.015", "--lattice", "amorphous",
                 "--elements", "pt,FE", "--out", str(tmp_path / "sac.csv")]) == 0
    as_csv = pd.read_csv(tmp_path / "sac.csv")
    assert sorted(as_csv["element"]) == sorted(atoms["element"].astype(str)) and len(as_csv) == len(atoms)
    assert main(["find", str(tmp_path / "sac.npy"), "--pixel-size", "0.015", "--elements", "Pt",
                 "--out", str(tmp_path / "g.parquet")]) == 2
    assert "amorphous" in capsys.readouterr().err
    np.save(tmp_path / "movie.npy", np.stack([sim.image] * 5))
    assert main(["find", str(tmp_path / "movie.npy"), "--pixel-size", "0.015", "--low-dose", "--elements", "Pt",
                 "--out", str(tmp_path / "m.parquet")]) == 2
    assert "--elements" in capsys.readouterr().err and not (tmp_path / "m.parquet").exists()


def test_simulate_4d(tmp_path, capsys):
    out = tmp_path / "scan.zarr"
    assert main(["simulate", "--4d", "--size", "16", "--detector-size", "32", "--out", str(out), "--quiet"]) == 0
    assert main(["info", str(out)]) == 0
    assert "(16, 16, 32, 32)" in capsys.readouterr().out


def test_existing_output_is_an_error_naming_overwrite(tmp_path, capsys):
    args = ["simulate", "--n-frames", "1", "--size", "32", "--out", str(tmp_path / "a.zarr"), "--quiet"]
    assert main(args) == 0
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_bad_defect_spec_is_explained(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--defects", "Si1C3", "--out", str(tmp_path / "a.zarr")])
    assert "KIND=VALUE" in capsys.readouterr().err
    assert main(["simulate", "--defects", "Si9=1", "--size", "32", "--out", str(tmp_path / "b.zarr"), "--quiet"]) == 2
    assert "known: V1, V2" in capsys.readouterr().err


def test_demo_runs_the_pipeline_and_scores_it_against_the_truth(tmp_path):
    r = subprocess.run([sys.executable, "-m", "stemflow.cli", "demo", "--out", str(tmp_path), "--n-frames", "12",
                        "--size", "192", "--workers", "1", "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "dashboard: http" in r.stderr
    assert (tmp_path / "movie.zarr").is_dir() and (tmp_path / "movie.events.parquet").is_file()
    run = tmp_path / "run"
    for name in ("trajectories.parquet", "events.parquet", "drift.parquet", "report.html"):
        assert (run / name).is_file(), name
    lattice = next(line for line in r.stdout.splitlines() if line.strip().startswith("lattice"))
    assert float(lattice.split()[5]) > 0.98                      # F1 of the lattice atoms
    assert "purity" in r.stdout and "hop" in r.stdout
    truth = pd.read_parquet(tmp_path / "movie.events.parquet")
    found = pd.read_parquet(run / "events.parquet")
    hops_true = set(truth.loc[truth.kind == "hop", "frame"])
    hops_found = set(found.loc[found.kind.astype(str) == "hop", "frame"])
    assert hops_true == hops_found


def test_track_and_report_commands_write_the_tables(tmp_path):
    from stemflow import find_atoms
    from stemflow.simulate import simulate_movie

    mov = simulate_movie("graphene", 8, 160, seed=3, pixel_size=0.012, drift=(0.5, 0.3),
                         defects={"Si1C3": 0.4, "V1": 0.2}, rates={"hop": 0.3})
    atoms = find_atoms(mov.images(), pixel_size=0.012)
    atoms.to_parquet(tmp_path / "atoms.parquet")
    assert main(["track", str(tmp_path / "atoms.parquet"), "--out", str(tmp_path / "t")]) == 0
    ev = pd.read_parquet(tmp_path / "t" / "events.parquet")
    truth = mov.events[mov.events.kind == "hop"]
    assert set(ev.loc[ev.kind.astype(str) == "hop", "frame"]) == set(truth.frame)
    assert (tmp_path / "t" / "report.html").stat().st_size > 10_000
    (tmp_path / "t" / "report.html").unlink()
    assert main(["report", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "report.html").is_file()
    assert main(["track", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "u")]) == 2


@pytest.mark.parametrize("exc, code, word", [
    (RuntimeError("a worker died\n  (details)"), 1, "failed: RuntimeError: a worker died (details)"),
    (PermissionError("[Errno 13] Permission denied: 'out'"), 2, "error: [Errno 13] Permission denied"),
    (KeyboardInterrupt(), 130, "interrupted; the parts already written are kept; run the same command again"),
])
def test_every_failure_is_one_line_without_a_traceback(monkeypatch, tmp_path, capsys, exc, code, word):
    import stemflow.cli as cli

    def boom(args):
        raise exc

    monkeypatch.delenv("STEMFLOW_DEBUG", raising=False)
    monkeypatch.setattr(cli, "_cmd_info", boom)                  # the parser is built inside main
    f = tmp_path / "x.npy"
    f.write_bytes(b"")
    assert main(["info", str(f)]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stemflow info: ") and word in err, err
    assert "Traceback" not in err


def test_stemflows_warnings_are_one_line_each_naming_the_command(monkeypatch, tmp_path, capsys):
    """A command line user sees ``stemflow CMD: warning: …``, one line per warning, not Python's
    file, line number and source line; other libraries' warnings keep their usual form."""
    import warnings

    import stemflow.cli as cli
    from stemflow.errors import StemflowWarning

    def warns(args):
        warnings.warn("the pixel size is\n  probably 0.0127 nm/px", StemflowWarning, stacklevel=2)
        warnings.warn("a library's own", RuntimeWarning, stacklevel=2)
        return 0

    monkeypatch.setattr(cli, "_cmd_info", warns)
    f = tmp_path / "x.npy"
    f.write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="a library's own"):        # the usual way (recorded here)
        assert main(["info", str(f)]) == 0
    err = capsys.readouterr().err
    assert err == "stemflow info: warning: the pixel size is probably 0.0127 nm/px\n", err


def test_ctrl_c_during_a_run_says_how_many_parts_are_complete(monkeypatch, tmp_path, capsys):
    import stemflow.cli as cli
    from stemflow.parallel import output

    out = tmp_path / "run"

    def interrupted(args):
        output.prepare(out, {"format": "x", "parts": [[0, 2], [2, 4], [4, 6]]})
        output.write_part(out, 0, output.empty_atoms())
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_run", interrupted)
    assert main(["run", str(tmp_path / "in.zarr"), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err == "stemflow run: interrupted: 1 of 3 parts complete; run the same command again to resume\n"


def test_every_command_shows_examples_defaults_and_units(capsys):
    from stemflow.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) >= {"info", "simulate", "find", "train", "adapt", "evaluate", "run", "track", "report", "demo"}
    for name, sub in commands.items():
        text = sub.format_help()
        assert "examples:\n  stemflow " + name in text, name
        for action in sub._actions:
            if action.option_strings and action.help not in (None, argparse.SUPPRESS) and action.dest != "help":
                assert action.help.strip(), (name, action.dest)                 # every option says what it is
    find, run, sim = commands["find"], commands["run"], commands["simulate"]
    assert "nm/px (default: from the file)" in find.format_help()
    assert "(default: 0.5)" in " ".join(run.format_help().split())
    # one meaning per option: --frames is a range; counts are --n-frames; chemistry on by default in both
    assert find.parse_args(["x", "--out", "y"]).identify and run.parse_args(["x", "--out", "y"]).identify
    assert not run.parse_args(["x", "--out", "y", "--no-identify"]).identify
    assert find.parse_args(["x", "--out", "y", "--flips", "4"]).flips == 4
    assert run.parse_args(["x", "--out", "y"]).flips is find.parse_args(["x", "--out", "y"]).flips is None
    with pytest.raises(SystemExit):
        find.parse_args(["x", "--out", "y", "--flips", "3"])
    with pytest.raises(SystemExit):
        sim.parse_args(["--frames", "3", "--out", "a.zarr"])
    assert "the number of frames is --n-frames 3" in capsys.readouterr().err


def test_track_refuses_a_folder_that_is_no_atoms_table_and_takes_a_spacing(tmp_path, capsys):
    import numpy as np

    (tmp_path / "image.zarr").mkdir()
    assert main(["track", str(tmp_path / "image.zarr"), "--out", str(tmp_path / "t")]) == 2
    assert "not an atoms table" in capsys.readouterr().err
    # heavy atoms hopping 0.17 nm: a hop at --spacing 0.2 (0.75 × 0.2 = 0.15 nm), none at 0.3
    rng = np.random.default_rng(1)
    yx = rng.uniform(20, 230, (10, 2))
    rows = [pd.DataFrame({"frame": f, "y": yx[:, 0] + (0.17 / 0.03 if f >= 2 else 0) * (np.arange(10) == 0),
                          "x": yx[:, 1], "label": "dopant"}) for f in range(5)]
    pd.concat(rows, ignore_index=True).to_parquet(tmp_path / "a.parquet")
    hops = {}
    for sp in ("0.2", "0.3"):
        assert main(["track", str(tmp_path / "a.parquet"), "--out", str(tmp_path / sp), "--pixel-size", "0.03",
                     "--spacing", sp, "--no-report"]) == 0
        ev = pd.read_parquet(tmp_path / sp / "events.parquet")
        hops[sp] = int((ev["kind"].astype(str) == "hop").sum())
    assert hops == {"0.2": 1, "0.3": 0}


def test_simulate_says_when_fewer_defects_fit_than_asked(tmp_path, capsys):
    args = ["simulate", "--size", "128", "--n-frames", "2", "--quiet", "--out"]
    assert main(args + [str(tmp_path / "crowd.zarr"), "--defects", "Si1C3=30"]) == 0
    err = capsys.readouterr().err
    first = pd.read_parquet(tmp_path / "crowd.atoms.parquet").query("frame == 0")
    placed = first.loc[first["defect"] == "Si1C3", "defect_id"].nunique()
    assert f"placed {placed} of 30 Si1C3" in err and placed < 30
    assert main(args[:2] + ["256"] + args[3:] + [str(tmp_path / "few.zarr"), "--defects", "Si1C3=1"]) == 0
    assert "placed" not in capsys.readouterr().err


def test_advice_in_messages_is_given_in_the_command_lines_terms(tmp_path, capsys):
    import numpy as np

    from stemflow.simulate import simulate_image

    sim = simulate_image("amorphous", 256, seed=0, pixel_size=0.01, dose=1e5, defects={"Pt1": 10, "Fe1": 10})
    np.save(tmp_path / "mix.npy", sim.image)
    assert main(["find", str(tmp_path / "mix.npy"), "--pixel-size", "0.01", "--lattice", "amorphous",
                 "--out", str(tmp_path / "mix.parquet")]) == 0
    err = capsys.readouterr().err
    assert "stemflow find: warning:" in err and "pass --elements Fe,Pt to keep" in err and "elements=(" not in err
