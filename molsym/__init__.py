"""molsym: E(3)-equivariant machine-learned interatomic potentials in PyTorch."""
__version__ = "0.1.0"

from molsym.checkpoint import CheckpointError, load, save  # noqa: E402
from molsym.data.graph import collate, from_ase, to_ase  # noqa: E402
from molsym.models.compiled import CompiledPotential  # noqa: E402
from molsym.models.potential import Potential  # noqa: E402

__all__ = ["Potential", "CompiledPotential", "load", "save", "CheckpointError", "from_ase", "to_ase", "collate", "__version__"]
