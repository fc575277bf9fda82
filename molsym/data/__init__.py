"""Graph dicts: keys, neighbour lists, conversions from and to ase.Atoms, batching."""
from molsym.data import keys
from molsym.data.graph import check_atoms, collate, from_ase, to_ase, to_device, validate_structure
from molsym.data.lattice import MAX_NEIGHBOURS_PER_ATOM
from molsym.data.neighbours import lattice_neighbours, neighbour_list
from molsym.data.structure_checks import MIN_DISTANCE, StructureError

__all__ = [
    "keys",
    "MAX_NEIGHBOURS_PER_ATOM",
    "MIN_DISTANCE",
    "StructureError",
    "check_atoms",
    "collate",
    "from_ase",
    "to_ase",
    "to_device",
    "validate_structure",
    "neighbour_list",
    "lattice_neighbours",
]
