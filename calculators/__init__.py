"""ASE calculators for molsym potentials."""
from molsym.calculators.ase_calculator import MolSymCalculator

__all__ = ["MolSymCalculator"]
