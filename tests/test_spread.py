"""How single atoms are spread (stemflow.chem.spread): groups, per-frame statistics, Ripley's L
and the ``stemflow dispersion`` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stemflow.chem import DIMER_NM, atom_groups, dispersion, ripley_l
from stemflow.errors import InputError

PS, SHAPE = 0.03, (512, 512)


def _atoms(yx, frame=None, label="dopant"):
    df = pd.DataFrame({"y": np.asarray(yx, float)[:, 0], "x": np.asarray(yx, float)[:, 1], "label": label})
    if frame is not None:
        df.insert(0, "frame", frame)
    return df


def _csr(rng, n):
    return rng.uniform(-0.5, SHAPE[0] - 0.5, (n, 2))        # pixel centres: the frame spans -0.5 … 511.5 px


def test_groups_join_by_single_linkage_within_each_frame():
    # frame 0: a chain of three (each 0.3 nm from the next, ends 0.6 nm apart), a pair 0.27 nm apart,
    # one single; frame 1: one atom where frame 0's single is (frames never mix)
    step = 0.3 / PS
    yx0 = [[100, 100], [100, 100 + step], [100, 100 + 2 * step], [300, 300], [300, 309], [450, 50]]
    atoms = pd.concat([_atoms(yx0, 0), _atoms([[450, 51]], 1)], ignore_index=True)
    atoms.loc[len(atoms)] = {"frame": 0, "y": 200.0, "x": 200.0, "label": "lattice"}   # not counted
    g = atom_groups(atoms, PS)
    assert g["group_size"].tolist() == [3, 3, 3, 2, 2, 1, 1, 0]
    assert g.loc[:2, "group"].nunique() == 1 and g.loc[3, "group"] == g.loc[4, "group"] != g.loc[0, "group"]
    assert g.loc[7, "group"] == -1 and np.isnan(g.loc[7, "nn_nm"])
    assert g.loc[3, "nn_nm"] == pytest.approx(9 * PS)
    assert np.isnan(g.loc[6, "nn_nm"])                  # alone in frame 1, although 1 px from frame 0's atom
    # a smaller pair distance breaks the chain
    assert atom_groups(atoms, PS, within_nm=0.28)["group_size"].tolist()[:5] == [1, 1, 1, 2, 2]


def test_groups_count_only_the_element_asked_for():
    atoms = _atoms([[100, 100], [100, 109], [100, 118]]).assign(element=["Pt", "Fe", "Pt"])
    g = atom_groups(atoms, PS, element="Pt")
    assert g["group_size"].tolist() == [1, 0, 1]                       # the Fe between them is not counted
    with pytest.raises(InputError, match="element"):
        atom_groups(_atoms([[1, 1]]), PS, element="Pt")


def test_dispersion_counts_density_and_groups_exactly():
    yx = [[50, 50], [50, 59], [200, 200], [200, 209], [209, 200], [400, 400]]    # a pair, a triple, a single
    d = dispersion(_atoms(yx), PS, SHAPE)
    area = (SHAPE[0] * PS) ** 2
    row = d.iloc[0]
    assert "frame" not in d.columns
    assert row.n_atoms == 6 and row.area_nm2 == pytest.approx(area) and row.density_per_nm2 == pytest.approx(6 / area)
    assert (row.singles, row.pairs, row.triples, row.larger) == (1, 1, 1, 0)
    assert row.isolated_share == pytest.approx(1 / 6)
    assert d.attrs["frame_shape"] == pytest.approx(list(SHAPE))


def test_dispersion_reports_frames_without_atoms_when_asked():
    atoms = _atoms([[10, 10], [100, 100]], frame=[0, 2])
    d = dispersion(atoms, PS, SHAPE, frames=range(4))
    assert d["frame"].tolist() == [0, 1, 2, 3] and d["n_atoms"].tolist() == [1, 0, 1, 0]
    assert np.isnan(d["clark_evans"]).all()              # under 2 atoms a frame has no nearest neighbour
    assert dispersion(atoms, PS, SHAPE)["frame"].tolist() == [0, 2]


def test_clark_evans_tells_random_from_clustered_and_regular():
    rng = np.random.default_rng(11)
    z = np.array([dispersion(_atoms(_csr(rng, rng.integers(10, 80))), PS, SHAPE).clark_evans_z[0]
                  for _ in range(300)])
    # Donnelly's edge correction: at the 5 % level random patterns are rejected about 5 % of the time
    # (without it the nearest neighbours cut off by the frame's edge push z up: ~15 % rejected)
    assert abs(z.mean()) < 0.25 and 0.015 < np.mean(np.abs(z) > 1.96) < 0.09
    parents = rng.uniform(30, 480, (12, 2))
    clustered = np.repeat(parents, 4, axis=0) + rng.normal(0, 6, (48, 2))
    d = dispersion(_atoms(clustered), PS, SHAPE).iloc[0]
    assert d.clark_evans < 0.6 and d.clark_evans_z < -1.96
    grid = np.mgrid[20:500:40, 20:500:40].reshape(2, -1).T + rng.normal(0, 2, (144, 2))
    d = dispersion(_atoms(grid), PS, SHAPE).iloc[0]
    assert d.clark_evans > 1.5 and d.clark_evans_z > 1.96


def test_ripley_l_is_unbiased_and_its_envelope_holds_its_level():
    # a frame twice as wide as high, three frames of unequal counts pooled
    rng = np.random.default_rng(5)
    shape = (256, 512)
    radii = np.linspace(0.5, 1.8, 6)

    def pattern():
        return pd.concat([_atoms(rng.uniform((-0.5, -0.5), (shape[0] - 0.5, shape[1] - 0.5), (n, 2)), f)
                          for f, n in enumerate((10, 25, 50))], ignore_index=True)

    curves = [ripley_l(pattern(), PS, shape, radii_nm=radii, simulations=19, hard_core_nm=0, seed=i)
              for i in range(100)]
    mean = np.mean([c["l_minus_r_nm"] for c in curves], axis=0)
    # the translation correction: random placement gives L(r) = r at every radius (uncorrected, the
    # pairs cut off by the frame's edge pull L(1.8 nm) about 0.15 nm low)
    assert np.abs(mean).max() < 0.03
    # the envelope: at 19 simulations and alpha 0.05 a random pattern leaves it with chance 1/20;
    # it leaves exactly when p ≤ alpha
    left = np.array([(c["verdict"] != "random").any() for c in curves])
    p = np.array([c.attrs["p_value"] for c in curves])
    assert 0.0 < left.mean() <= 0.12
    assert np.array_equal(left, p <= 0.05)
    assert set(np.round(p * 20, 9)) <= set(range(1, 21))          # p = (1 + rank) / (s + 1)


def test_ripley_l_weighs_a_pair_by_the_frame_it_can_be_seen_in():
    # a 1 nm × 2 nm frame (100 × 200 px at 0.01 nm/px) and two atoms 0.5 nm apart along y: the pair
    # fits in (1 - 0.5) × 2 nm of translations, so its weight is 2 / 1 = 2 and K(r ≥ 0.5 nm) is
    # area / (n (n - 1)) × 2 ordered pairs × 2 = 4 nm²
    atoms = _atoms([[20, 100], [70, 100]])
    c = ripley_l(atoms, 0.01, (100, 200), radii_nm=[0.4, 0.6], simulations=0, hard_core_nm=0)
    assert c["l_minus_r_nm"].tolist() == pytest.approx([-0.4, np.sqrt(4 / np.pi) - 0.6])


def _finder_like(rng, n, sep_px):
    """A dense random pattern thinned as the heavy-atom finder thins its maxima: integer pixels, the
    strongest (here: a random order) kept, any other within ``sep_px`` along both axes dropped."""
    yx = rng.integers(0, SHAPE[0], (n, 2)).astype(float)
    kept = []
    for p in yx:
        if all(np.max(np.abs(p - q)) > sep_px for q in kept):
            kept.append(p)
    return np.array(kept) + rng.uniform(-0.4, 0.4, (len(kept), 2))       # sub-pixel peaks


def test_ripley_l_finds_clusters_and_the_finders_exclusion_is_not_dispersion():
    from stemflow.chem import finder_exclusion_nm

    rng = np.random.default_rng(3)
    parents = rng.uniform(30, 480, (15, 2))
    clustered = np.repeat(parents, 4, axis=0) + rng.normal(0, 8, (60, 2))
    c = ripley_l(_atoms(clustered), PS, SHAPE, radii_nm=[0.5, 1.0, 3.0])
    assert c["verdict"].tolist()[:2] == ["clustered", "clustered"] and c.attrs["p_value"] <= 0.02
    # random patterns of about 0.6 atoms/nm² thinned as the finder thins (±5 px searched at
    # 0.03 nm/px): plain CSR calls them dispersed at small radii; by default the random patterns
    # keep the finder's exclusion
    assert finder_exclusion_nm(PS) == pytest.approx(6 * PS)
    radii = np.linspace(0.19, 1.5, 10)
    plain, matched = [], []
    for i in range(16):
        t = _atoms(_finder_like(rng, 150, 5))
        plain.append(ripley_l(t, PS, SHAPE, radii_nm=radii, hard_core_nm=0, seed=i).attrs["p_value"])
        matched.append(ripley_l(t, PS, SHAPE, radii_nm=radii, seed=i).attrs["p_value"])
    assert np.mean(np.array(plain) <= 0.05) >= 0.5 and np.mean(np.array(matched) <= 0.05) <= 0.2
    # a crystal's dopants: no exclusion by default
    crystal = _atoms(_csr(rng, 40))
    crystal.attrs["lattice"] = "graphene"
    assert ripley_l(crystal, PS, SHAPE, simulations=19).attrs["hard_core_nm"] == 0


def test_ripley_l_pools_frames_and_says_when_it_cannot_judge():
    rng = np.random.default_rng(8)
    atoms = pd.concat([_atoms(_csr(rng, 30), f) for f in range(3)], ignore_index=True)
    c = ripley_l(atoms, PS, SHAPE, simulations=19)
    assert c.attrs["atoms"] == 90 and c.attrs["frames"] == 3 and len(c) == 40
    assert c["radius_nm"].iloc[-1] == pytest.approx(SHAPE[0] * PS / 4)
    lone = ripley_l(_atoms([[10, 10]]), PS, SHAPE, simulations=19)
    assert set(lone["verdict"]) == {"unknown"} and np.isnan(lone.attrs["p_value"])
    assert set(ripley_l(atoms, PS, SHAPE, simulations=0)["verdict"]) == {"unknown"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(radii_nm=[1.0, 0.5]), "increasing"),
    (dict(radii_nm=[0.5, 20.0]), "shorter side"),
    (dict(shape=(256, 256)), "outside a frame"),
    (dict(hard_core_nm=-1), "hard_core_nm"),
    (dict(simulations=5), "too few"),
    (dict(alpha=1.5), "alpha"),
])
def test_ripley_l_refuses_bad_settings(kwargs, match):
    with pytest.raises(InputError, match=match):
        ripley_l(_atoms([[10, 10], [300, 20]]), PS, **{"shape": SHAPE, **kwargs})


def test_missing_calibration_and_frame_size_are_named():
    atoms = _atoms([[10, 10], [20, 20]])
    with pytest.raises(InputError, match="pixel_size"):
        dispersion(atoms, shape=SHAPE)
    with pytest.raises(InputError, match="frame_shape"):
        dispersion(atoms, PS)
    with pytest.raises(InputError, match="shape"):
        ripley_l(atoms, PS, shape=(512,))
    with pytest.raises(InputError, match="NaN"):
        dispersion(_atoms([[np.nan, 1.0]]), PS, SHAPE)
    with pytest.raises(InputError, match="outside a frame of 512 × 256 px"):
        dispersion(_atoms([[10, 10], [10, 300]]), PS, (512, 256))


def test_find_atoms_records_the_frame_size_so_the_statistics_need_no_more():
    import warnings

    import stemflow
    from stemflow.simulate import simulate_image

    sim = simulate_image("amorphous", (192, 256), pixel_size=0.03, seed=4, dose=1e5, defects={"Pt1": 8})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = stemflow.find_atoms(sim.image, pixel_size=0.03, lattice="amorphous")
    assert atoms.attrs["frame_shape"] == [192, 256]
    d = dispersion(atoms)
    assert d.iloc[0].area_nm2 == pytest.approx(192 * 256 * 0.03**2)
    assert d.iloc[0].n_atoms == (atoms["label"].astype(str) == "dopant").sum() > 0


def test_cli_dispersion_reads_a_table_and_writes_its_tables_and_figure(tmp_path, capsys):
    from stemflow.cli import main
    from stemflow.tables import ATOMS, parquet_metadata

    rng = np.random.default_rng(2)
    atoms = _atoms(_csr(rng, 40), frame=0)
    path = tmp_path / "atoms.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.Table.from_pandas(atoms, preserve_index=False)
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, **parquet_metadata(
        ATOMS, {"pixel_size": PS, "frame_shape": list(SHAPE)})}), path)
    rc = main(["dispersion", str(path), "--out", str(tmp_path / "d.csv"), "--ripley-out", str(tmp_path / "l.parquet"),
               "--plot", str(tmp_path / "l.png"), "--simulations", "19"])
    out = capsys.readouterr().out
    assert rc == 0 and "40 atoms (label dopant) in 1 frame(s)" in out and "Ripley's L" in out
    d = pd.read_csv(tmp_path / "d.csv")
    assert d["n_atoms"].tolist() == [40] and d["density_per_nm2"][0] == pytest.approx(40 / (512 * PS) ** 2)
    assert len(pd.read_parquet(tmp_path / "l.parquet")) == 40 and (tmp_path / "l.png").stat().st_size > 0
    assert "p = " in out and "pooled" not in out                  # one frame: nothing pooled
    # a folder of parts of any name, and frames with no atom counted when a range is given
    (tmp_path / "parts").mkdir()
    _write_atoms(tmp_path / "parts" / "a.parquet", atoms, {"pixel_size": PS, "frame_shape": list(SHAPE)})
    _write_atoms(tmp_path / "parts" / "b.parquet", atoms.assign(frame=2), {"pixel_size": PS, "frame_shape": list(SHAPE)})
    assert main(["dispersion", str(tmp_path / "parts"), "--frames", "0:4", "--simulations", "19",
                 "--out", str(tmp_path / "d4.csv")]) == 0
    assert pd.read_csv(tmp_path / "d4.csv")["n_atoms"].tolist() == [40, 0, 40, 0]
    assert "The 2 frames are pooled as different areas" in capsys.readouterr().out      # those with atoms
    assert main(["dispersion", str(tmp_path / "parts"), "--frames", "2", "--simulations", "0",
                 "--out", str(tmp_path / "d2.csv")]) == 0                                  # one frame: K
    assert pd.read_csv(tmp_path / "d2.csv")["frame"].tolist() == [2]
    assert main(["dispersion", str(tmp_path / "d4.csv"), "--frames", "9:12"]) == 2          # a CSV table
    assert "--shape H W" in capsys.readouterr().err
    # a run's frames 100–103: a range outside them is refused, not answered with an empty table
    _write_atoms(tmp_path / "late.parquet", atoms.assign(frame=101),
                 {"pixel_size": PS, "frame_shape": list(SHAPE), "frames": [100, 104]})
    assert main(["dispersion", str(tmp_path / "late.parquet"), "--frames", "0:2"]) == 2
    assert "selects none of the frames 100–103" in capsys.readouterr().err
    assert main(["dispersion", str(tmp_path / "late.parquet"), "--simulations", "0", "--out",
                 str(tmp_path / "late.csv")]) == 0
    assert pd.read_csv(tmp_path / "late.csv")["n_atoms"].tolist() == [0, 40, 0, 0]
    # without the frame size recorded, the command names what to pass
    atoms.to_parquet(tmp_path / "bare.parquet")
    assert main(["dispersion", str(tmp_path / "bare.parquet"), "--pixel-size", "0.03"]) == 2
    assert "--shape H W" in capsys.readouterr().err


def test_pair_distance_default_is_the_cli_default():
    from stemflow.cli import build_parser

    args = build_parser().parse_args(["dispersion", "x.parquet"])
    assert args.within_nm == DIMER_NM


def _write_atoms(path, atoms, attrs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stemflow.tables import ATOMS, parquet_metadata

    t = pa.Table.from_pandas(atoms, preserve_index=False)
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, **parquet_metadata(ATOMS, attrs)}), path)


def test_report_of_an_amorphous_run_says_how_its_heavy_atoms_are_spread(tmp_path):
    import re

    from stemflow.report import write_report

    rng = np.random.default_rng(4)
    parents = rng.uniform(40, 470, (10, 2))
    clustered = np.repeat(parents, 4, axis=0) + rng.normal(0, 6, (40, 2))
    atoms = pd.concat([_atoms(clustered, 0), _atoms(_csr(rng, 30), 1)], ignore_index=True)
    _write_atoms(tmp_path / "atoms.parquet", atoms, {"pixel_size": PS, "lattice": "amorphous", "frame_shape": list(SHAPE)})
    text = write_report(tmp_path).read_text()
    assert "<h2>How the heavy atoms are spread</h2>" in text and "70 heavy atoms in 2 frame(s)" in text
    assert "not placed at random" in text and "Ripley&#x27;s L of the heavy atoms" in text
    assert "2 frame(s), pooled as different areas" in text and "per nm² (" not in text
    # two elements: each one's density is said
    _write_atoms(tmp_path / "atoms.parquet", atoms.assign(element=["Pt"] * 50 + ["Fe"] * 20),
                 {"pixel_size": PS, "lattice": "amorphous", "frame_shape": list(SHAPE)})
    area = 2 * (SHAPE[0] * PS) ** 2
    assert f"(Fe {20 / area:.3g}, Pt {50 / area:.3g} per nm²" in write_report(tmp_path).read_text()
    _write_atoms(tmp_path / "atoms.parquet", atoms, {"pixel_size": PS, "lattice": "amorphous", "frame_shape": list(SHAPE)})
    # a movie (tracked): its frames show one area, so Ripley's L is of the first frame alone; the
    # run's frames with no heavy atom get their row
    (tmp_path / "manifest.json").write_text('{"complete": true, "parameters": {"frames": [0, 3]}}')
    pd.DataFrame({"frame": [0, 1], "y": [100.0, 120.0], "x": [100.0, 130.0], "particle": [0, 0]}).to_parquet(
        tmp_path / "trajectories.parquet")
    try:
        text = write_report(tmp_path).read_text()
    except Exception:
        (tmp_path / "manifest.json").unlink()
        raise
    assert "Ripley&#x27;s L of frame 0 only (a tracked run&#x27;s frames are taken for one area" in text
    assert re.search(r"<tr>\s*<td>2</td>\s*<td>0</td>", text)
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "trajectories.parquet").unlink()
    assert re.search(r"<tr>\s*<td>0</td>\s*<td>40</td>", text) and re.search(r"<tr>\s*<td>1</td>\s*<td>30</td>", text)
    # a crystal's run, or a table without the frame size, has no such section
    _write_atoms(tmp_path / "atoms.parquet", atoms, {"pixel_size": PS, "lattice": "graphene", "frame_shape": list(SHAPE)})
    assert "How the heavy atoms are spread" not in write_report(tmp_path).read_text()
    _write_atoms(tmp_path / "atoms.parquet", atoms, {"pixel_size": PS, "lattice": "amorphous"})
    assert "How the heavy atoms are spread" not in write_report(tmp_path).read_text()


def test_plot_ripley_draws_the_curve_inside_its_envelope():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from stemflow.plot import plot_ripley

    rng = np.random.default_rng(6)
    curve = ripley_l(_atoms(_csr(rng, 50)), PS, SHAPE, simulations=19, radii_nm=[0.5, 1, 2])
    ax = plot_ripley(curve, ax=Figure().add_subplot())
    (line,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]
    assert np.allclose(line.get_ydata(), curve["l_minus_r_nm"]) and len(ax.collections) == 1
    assert "50 atoms in 1 frame(s)" in ax.get_title()
    with pytest.raises(InputError, match="csr_low_nm"):
        plot_ripley(curve.drop(columns="csr_low_nm"))


def test_a_label_or_element_that_cannot_be_is_named_and_one_that_is_absent_counts_zero():
    atoms = _atoms([[10, 10], [100, 100]]).assign(element=["Pt", "Fe"])
    with pytest.raises(InputError, match="label 'foo'"):
        dispersion(atoms, PS, SHAPE, label="foo")
    with pytest.raises(InputError, match="'Xx' is not an element symbol"):
        dispersion(atoms, PS, SHAPE, element="Xx")
    assert dispersion(atoms, PS, SHAPE, element="pt")["n_atoms"].tolist() == [1]        # any case
    assert dispersion(atoms, PS, SHAPE, element="Au")["n_atoms"].tolist() == [0]       # no Au here: zero
    assert dispersion(atoms.assign(label="lattice"), PS, SHAPE)["n_atoms"].tolist() == [0]   # no dopant: zero


def test_cli_dispersion_of_an_empty_table_says_so(tmp_path, capsys):
    from stemflow.cli import main

    _write_atoms(tmp_path / "empty.parquet", _atoms(np.zeros((0, 2))), {"pixel_size": PS, "frame_shape": list(SHAPE)})
    assert main(["dispersion", str(tmp_path / "empty.parquet"), "--simulations", "19"]) == 0
    out = capsys.readouterr().out
    assert "no atoms (label dopant) in 1 frame(s)" in out and "too few atoms to judge." in out


def test_read_atoms_reads_one_file_as_find_writes_it(tmp_path):
    import stemflow

    atoms = _atoms(np.array([[10.0, 20.0], [30.0, 40.0]]), frame=0)
    atoms.attrs.update(pixel_size=PS, frame_shape=list(SHAPE))
    atoms.to_parquet(tmp_path / "found.parquet")
    back = stemflow.read_atoms(tmp_path / "found.parquet")
    assert len(back) == 2 and back.attrs["frame_shape"] == list(SHAPE) and back.attrs["pixel_size"] == PS
    assert dispersion(back)["n_atoms"].tolist() == [2]
    atoms.to_csv(tmp_path / "found.csv")
    with pytest.raises(InputError, match="CSV table, which records no calibration"):
        stemflow.read_atoms(tmp_path / "found.csv")
