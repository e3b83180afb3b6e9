"""Property-based checks: whatever an input looks like, stemflow gives a valid table or a stemflow
error naming the problem — never another exception, never a silent partial result."""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stemflow import find_atoms, open_stem
from stemflow.errors import StemflowError, StemflowWarning
from stemflow.tracking import track

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_dtypes = st.sampled_from([np.float32, np.float64, np.uint8, np.uint16, np.int32, np.bool_, np.complex64])
_shapes = st.lists(st.integers(0, 40), min_size=0, max_size=4).map(tuple)
_fill = st.sampled_from(["random", "constant", "nan", "inf", "zeros"])


def _make(shape, dtype, fill, seed):
    rng = np.random.default_rng(seed)
    if fill == "constant":
        a = np.full(shape, 3, dtype=dtype)
    elif fill == "zeros":
        a = np.zeros(shape, dtype=dtype)
    else:
        a = (rng.random(shape) * 50).astype(dtype)
        if fill in ("nan", "inf") and a.size and np.issubdtype(a.dtype, np.floating):
            a.flat[rng.integers(a.size)] = np.nan if fill == "nan" else np.inf
    return a


def _result_or_error(fn):
    """``fn()``'s result, or None when it raised a stemflow error with a message; any other
    exception propagates (and fails the property)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StemflowWarning)
        try:
            return fn()
        except StemflowError as exc:
            assert str(exc)                     # a message, naming the problem
            return None


def _valid_atoms(df):
    assert isinstance(df, pd.DataFrame)
    assert {"y", "x", "label", "prob"} <= set(df.columns)
    assert np.isfinite(df[["y", "x"]].to_numpy(float)).all()
    assert df["prob"].between(0, 1).all()


@FAST
@given(shape=_shapes, dtype=_dtypes, fill=_fill, seed=st.integers(0, 2**16),
       pixel_size=st.one_of(st.none(), st.sampled_from([0.02, 0.0, -1.0, float("nan"), 5.0, 1e-6])))
def test_find_atoms_gives_a_valid_table_or_a_stemflow_error(shape, dtype, fill, seed, pixel_size):
    img = _make(shape, dtype, fill, seed)
    out = _result_or_error(lambda: find_atoms(img, pixel_size=pixel_size, identify=False))
    if out is not None:
        _valid_atoms(out)


@FAST
@given(shape=_shapes, dtype=_dtypes, fill=_fill, seed=st.integers(0, 2**16))
def test_open_stem_gives_frames_or_a_stemflow_error(shape, dtype, fill, seed):
    arr = _make(shape, dtype, fill, seed)
    da = _result_or_error(lambda: open_stem(arr, pixel_size=0.02))
    if da is None:
        return
    assert da.dims[-2:] in (("y", "x"), ("k_y", "k_x")) and da.size == arr.size


_columns = st.sets(st.sampled_from(["frame", "y", "x", "label", "y_nm", "x_nm"]))


@FAST
@given(n=st.integers(0, 30), frames=st.integers(1, 4), keep=_columns, bad=st.sampled_from([None, "nan", "neg_frame"]),
       seed=st.integers(0, 2**16))
def test_track_gives_its_tables_or_a_stemflow_error(n, frames, keep, bad, seed):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"frame": rng.integers(0, frames, n), "y": rng.random(n) * 100, "x": rng.random(n) * 100,
                       "label": rng.choice(["lattice", "dopant", "vacancy"], n)})
    df["y_nm"], df["x_nm"] = df.y * 0.02, df.x * 0.02
    if bad == "nan" and n:
        df.loc[0, "x"] = np.nan
    if bad == "neg_frame" and n:
        df.loc[0, "frame"] = -1
    df = df[[c for c in df.columns if c in keep]]
    res = _result_or_error(lambda: track(df, pixel_size=0.02))
    if res is None:
        return
    traj, events, drift = res
    for t in (traj, events, drift):
        assert isinstance(t, pd.DataFrame)
    if len(traj):
        assert np.isfinite(traj[["y", "x"]].to_numpy(float)).all()


@pytest.mark.parametrize("args", [["find"], ["find", "x.npy"], ["run", "x.zarr"], ["track"], ["nope"]])
def test_the_command_line_never_prints_a_traceback_for_bad_usage(args, capsys):
    from stemflow.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
