"""Chemical identification: elements, bonds, coordination, lattice sites, defect complexes, rings
and unsupervised defect classes, from an atoms table (``y``, ``x`` px, ``label``).

Dopants are placed on the locally fitted lattice and checked by Z-contrast, width and geometry
(:func:`~stemflow.chem.dopants.check_dopants`): contamination, adatoms and edge blobs are not
dopants, and a dopant's first shell is counted on the lattice's sites, not by a cutoff. Column
occupancies (how full each column is, from the image against its own neighbourhood) tell
a half-empty chalcogen column from an empty one and check the network's vacancies. Every
function takes the atoms table of :func:`stemflow.find_atoms` and returns a copy with
more columns (or a table of its own: bonds, rings, empty sites, defects), so the steps chain::

    from stemflow.chem import identify, defect_table
    atoms = identify(find_atoms(image, pixel_size=0.012, lattice="graphene"))
    defect_table(atoms)

The pixel size (nm/px) and lattice come from ``atoms.attrs`` when not given. Pure
numpy / scipy / pandas / scikit-learn: no Dask.
"""

from .bonds import BOND_CUTOFFS, coordination, find_bonds
from .classes import class_mean_patches, classify_defects, cluster_descriptors, defect_descriptors, defect_patches
from .defects import defect_table, find_defects, ring_defect_name
from .dopants import check_dopants, dopant_geometry
from .elements import ELEMENT_MAPS, assign_elements, guess_element, measure_intensity
from .identification import identify, lattice_scale
from .occupancy import column_occupancy
from .prior import lattice_prior
from .rings import find_rings
from .spread import DIMER_NM, atom_groups, dispersion, finder_exclusion_nm, ripley_l
from .sites import assign_sites, empty_sites, fit_lattice, site_cells, site_id
from .vacuum import vacuum_rows

__all__ = ["identify", "lattice_scale", "check_dopants", "dopant_geometry", "assign_sites", "empty_sites", "fit_lattice", "site_id", "site_cells",
           "assign_elements", "guess_element", "measure_intensity", "column_occupancy", "find_bonds", "coordination",
           "find_rings", "find_defects", "defect_table", "ring_defect_name", "classify_defects",
           "defect_descriptors", "cluster_descriptors", "defect_patches", "class_mean_patches",
           "lattice_prior", "vacuum_rows", "atom_groups", "dispersion", "ripley_l", "finder_exclusion_nm", "BOND_CUTOFFS", "ELEMENT_MAPS",
           "DIMER_NM"]
