"""The data contract: every key of a structure or batch dict, defined once.

A structure or a batch of B structures with N atoms and E directed edges in
total is a plain ``dict[str, torch.Tensor]``. Units are eV, Å, eV/Å, eV/Å²,
eV/Å³ throughout.
"""

# --- inputs -----------------------------------------------------------------
POSITIONS = "positions"            # (N, 3) float, Å, Cartesian
ATOMIC_NUMBERS = "atomic_numbers"  # (N,) int64
BATCH = "batch"                    # (N,) int64, index of the structure of each atom
CELL = "cell"                      # (B, 3, 3) float, Å, lattice vectors as rows (zeros if none)
PBC = "pbc"                        # (B, 3) bool, periodic along each lattice vector
EDGE_INDEX = "edge_index"          # (2, E) int64, (i, j): atom j is a neighbour of atom i
EDGE_SHIFT = "edge_shift"          # (E, 3) float, Å, Cartesian lattice translation:
                                   #   r_ij = positions[j] - positions[i] + edge_shift
NUM_ATOMS = "num_atoms"            # (B,) int64, atoms per structure

# --- optional targets (labels) ------------------------------------------------
ENERGY = "energy"                  # (B,) float, eV, total energy
FORCES = "forces"                  # (N, 3) float, eV/Å
STRESS = "stress"                  # (B, 3, 3) float, eV/Å³, ASE sign convention
HESSIAN = "hessian"                # (3N, 3N) float, eV/Å², block-diagonal over structures
FIXED = "fixed"                    # (N,) bool, atom held fixed (OC20 move_mask inverted)
TAGS = "tags"                      # (N,) int64, OC20 tags: 0 subsurface, 1 surface, 2 adsorbate

# --- model outputs --------------------------------------------------------------
ATOMIC_ENERGIES = "energies"       # (N,) float, eV, per-atom energies (sum = ENERGY)

INPUT_KEYS = (POSITIONS, ATOMIC_NUMBERS, BATCH, CELL, PBC, EDGE_INDEX, EDGE_SHIFT, NUM_ATOMS)
TARGET_KEYS = (ENERGY, FORCES, STRESS, HESSIAN, FIXED, TAGS)
