"""The ``.stem`` accessor on :class:`xarray.DataArray`: a thin layer over plain functions.

``import stemflow`` registers it. Each method calls a plain stemflow function with the
DataArray's data, coords and attrs; no state is kept on the accessor.
"""

from __future__ import annotations

import xarray as xr

__all__ = ["StemAccessor"]


@xr.register_dataarray_accessor("stem")
class StemAccessor:
    """``da.stem``: stemflow on a DataArray (dims and attrs as :func:`stemflow.io.open_stem` makes)."""

    def __init__(self, da: xr.DataArray):
        self._da = da

    @property
    def pixel_size(self) -> float | None:
        """Real-space pixel size in nm/px (``attrs["pixel_size"]``), or None when unknown."""
        value = self._da.attrs.get("pixel_size")
        return None if value is None else float(value)

    @property
    def k_pixel_size(self) -> float | None:
        """Diffraction-space pixel size in mrad/px (``attrs["k_pixel_size"]``), or None."""
        value = self._da.attrs.get("k_pixel_size")
        return None if value is None else float(value)

    def info(self) -> str:
        """Text summary: dims, shape, dtype, chunks (shape, bytes per chunk, count), pixel size
        (nm/px) and size in memory; the same as :func:`stemflow.io.describe`."""
        from .io import describe

        return describe(self._da)

    def virtual_image(self, detector="haadf", *, inner=None, outer=None, center=None, k_pixel_size=None):
        """Virtual-detector image of 4D-STEM data, computed lazily chunk by chunk.

        Calls :func:`stemflow.parallel.virtual_image` on this DataArray: ``detector`` is a name
        (``bf``, ``abf``, ``adf``, ``maadf``, ``haadf``), ``"annular"`` with ``inner``/``outer``
        (mrad when ``attrs["k_pixel_size"]`` is known, else detector px) or a (k_y, k_x) mask;
        ``center`` in detector px. Returns a dask-backed (y, x) or (frame, y, x) DataArray with
        ``attrs["pixel_size"]`` (nm/px).
        """
        from .parallel.virtual import virtual_image

        return virtual_image(self._da, detector, inner=inner, outer=outer, center=center, k_pixel_size=k_pixel_size)

    def to_hyperspy(self):
        """This DataArray as a HyperSpy ``Signal2D`` (lazy for dask data), axes in nm / mrad
        (:func:`stemflow.io.to_hyperspy`; needs HyperSpy)."""
        from .io import to_hyperspy

        return to_hyperspy(self._da)

    def find_atoms(self, lattice: str = "graphene", model=None, **options):
        """Atoms, dopants and vacancies of this image or movie: :func:`stemflow.find_atoms` with the
        DataArray's pixel size (``attrs["pixel_size"]``, nm/px). Returns the atoms table (px, nm)."""
        from .find import find_atoms

        return find_atoms(self._da, pixel_size=self.pixel_size, lattice=lattice, model=model, **options)

    def track(self, lattice: str = "graphene", model=None, *, find_options=None, low_dose=None, **track_options):
        """Trajectories, events and drift of this movie (frame, y, x): :func:`stemflow.find_atoms`
        then :func:`stemflow.tracking.track`. Returns ``TrackResult(trajectories, events, drift)``.

        ``low_dose``: find the atoms with all frames together (:func:`stemflow.find_atoms_movie`)
        instead of frame by frame. None (the default): when the first frames are too dim for
        single frames (:func:`stemflow.lowdose.low_dose_check`) and no ``find_options`` are given,
        with a :class:`~stemflow.errors.StemflowWarning` that says so (or that suggests it, for
        frames dose-limited but still readable); the choice is in
        ``result.trajectories.attrs["low_dose"]``.

        For movies larger than memory use ``stemflow run`` (:func:`stemflow.parallel.run`), which
        does the same chunk by chunk on a Dask cluster."""
        from .tracking import track

        if "frame" not in self._da.dims:
            raise ValueError(f"track needs a movie with a 'frame' dimension; this DataArray has dims {self._da.dims}")
        if low_dose is None:
            low_dose = False
            if not find_options and self._da.sizes["frame"] >= 5:
                import warnings

                from .errors import StemflowWarning
                from .lowdose import low_dose_advice, low_dose_check

                check = low_dose_check(self._da, self.pixel_size, lattice=lattice, model=model)
                low_dose = check["low_dose"]
                advice = low_dose_advice(check)
                if advice:
                    warnings.warn(advice, StemflowWarning, stacklevel=2)
        if low_dose:
            from .lowdose import find_atoms_movie

            atoms = find_atoms_movie(self._da, self.pixel_size, lattice=lattice, model=model, **(find_options or {}))
        else:
            atoms = self.find_atoms(lattice=lattice, model=model, **(find_options or {}))
        result = track(atoms, pixel_size=self.pixel_size, **track_options)
        result.trajectories.attrs["low_dose"] = bool(low_dose)
        return result
