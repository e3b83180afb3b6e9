"""Simulated atomic-resolution STEM data with exact ground truth.

Lattices (graphene, 2H-WS2/MoS2, an amorphous carbon support with heavy atoms), defects, Z-contrast
image formation with a finite probe (Gaussian, or computed from the lens aberrations), detector
angles, dose noise, scan distortions and detector response, movies in which dopants hop
and vacancies migrate, and 4D-STEM datasets. Everything is numpy/scipy; the tables follow
``DESIGN.md`` so every later stage can be scored against them.
"""

from .fourd import diffraction_patterns, simulate_4d
from .imaging import Imaging, probe_profile
from .movie import (DEFAULT_DEFECTS, DEFAULT_RATES, SimulatedImage,
                    SimulatedMovie, simulate_image, simulate_movie)
from .structure import DEFECT_KINDS, defect_kinds

__all__ = ["simulate_image", "simulate_movie", "simulate_4d", "diffraction_patterns", "Imaging",
           "probe_profile",
           "SimulatedImage", "SimulatedMovie", "DEFECT_KINDS",
           "defect_kinds", "DEFAULT_DEFECTS", "DEFAULT_RATES"]
