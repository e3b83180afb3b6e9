"""Tests of the ``.stem`` xarray accessor."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import xarray as xr

import stemflow.accessor  # noqa: F401  (registers .stem)
from stemflow.io import open_stem


def test_pixel_size_is_read_from_attrs_in_nm_per_px():
    arr = open_stem(np.zeros((3, 8, 8), np.uint16), pixel_size=0.0127)
    assert arr.stem.pixel_size == 0.0127
    assert isinstance(arr.stem.pixel_size, float)


def test_pixel_size_is_none_when_unknown():
    assert xr.DataArray(np.zeros((8, 8))).stem.pixel_size is None


def test_k_pixel_size_in_mrad_per_px():
    arr = xr.DataArray(np.zeros((2, 2, 4, 4)), attrs={"k_pixel_size": 0.5})
    assert arr.stem.k_pixel_size == 0.5


def test_info_summarises_an_in_memory_dataarray():
    arr = open_stem(np.zeros((5, 16, 20), np.float32), pixel_size=0.02)
    text = arr.stem.info()
    assert "frame: 5, y: 16, x: 20" in text
    assert "float32" in text
    assert "(5, 16, 20), 6.25 kiB per chunk, 1 chunk" in text
    assert "0.02 nm/px" in text
    assert "(6400 bytes)" in text


def test_info_of_a_numpy_backed_array_says_unknown_pixel_size():
    text = xr.DataArray(np.zeros((4, 4), np.uint8), dims=("y", "x")).stem.info()
    assert "pixel size:   unknown" in text
    assert "chunks:       none (in memory)" in text


def test_import_stemflow_registers_the_accessor():
    code = "import numpy, xarray, stemflow; print(xarray.DataArray(numpy.zeros((2, 2))).stem.pixel_size)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
