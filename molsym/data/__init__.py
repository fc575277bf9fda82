"""Graph dicts: keys, neighbour lists, conversions from and to ase.Atoms, batching."""
from molsym.data import keys
from molsym.data.graph import collate, from_ase, to_ase, to_device, validate_structure
from molsym.data.neighbours import lattice_neighbours, neighbour_list

__all__ = [
    "keys",
    "collate",
    "from_ase",
    "to_ase",
    "to_device",
    "validate_structure",
    "neighbour_list",
    "lattice_neighbours",
]
