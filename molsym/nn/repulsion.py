"""ZBL repulsion: the universal screened nuclear repulsion of Ziegler, Biersack and Littmark, as a pair prior.

For every pair of atoms i, j at distance r (Å) closer than the pair's cutoff r_c,

    E_ij = k Z_i Z_j / r * phi(r / a) * u(r / r_c)       (eV),  k = e^2 / (4 pi eps0) = 14.399645 eV Å
    a    = 0.46850 Å / (Z_i^0.23 + Z_j^0.23)          (= 0.8854 a_0 / (Z_i^0.23 + Z_j^0.23))
    phi(x) = 0.18175 e^(-3.19980 x) + 0.50986 e^(-0.94229 x) + 0.28022 e^(-0.40290 x) + 0.02817 e^(-0.20162 x)

(Ziegler, Biersack & Littmark, "The Stopping and Range of Ions in Solids",
1985; the constants of LAMMPS' pair_style zbl). u is the polynomial
envelope of ``molsym.nn.radial.PolynomialCutoff`` (p = 6): 1 at r = 0 and 0
at r_c with vanishing first and second derivatives, so energy, forces and
Hessians stay continuous as a pair leaves r_c. The pair cutoff is either one
distance for every pair or, as in MACE's ZBL term, the sum of the two atoms'
covalent radii (``"covalent"``: Cordero et al. 2008, as ``ase.data`` holds
them), so the prior acts only inside bonding distances and the model learns
the rest. Everything is elementary functions of r, so autograd gives forces,
stress and Hessians through it.
"""
from __future__ import annotations

import torch
from torch import nn

from molsym.data import keys as K
from molsym.nn.radial import PolynomialCutoff
from molsym.nn.scatter import scatter_sum

COULOMB_EV_A = 14.399645478425668  # e^2 / (4 pi eps0), eV Å (CODATA 2018)
SCREENING_LENGTH_A = 0.46850  # Å: 0.8854 x the Bohr radius
SCREENING_POWER = 0.23
PHI_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
PHI_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)


def zbl_screening(x: torch.Tensor) -> torch.Tensor:
    """phi(x), the universal screening function of the reduced distance x = r / a (dimensionless, any shape)."""
    return sum(c * torch.exp(-d * x) for c, d in zip(PHI_COEFFICIENTS, PHI_EXPONENTS))


def zbl_pair_energy(lengths: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
    """Bare ZBL energy (eV) of pairs at ``lengths`` (E,) Å with atomic numbers ``z_i``, ``z_j`` (E,); no cutoff."""
    zi, zj = z_i.to(lengths.dtype), z_j.to(lengths.dtype)
    a = SCREENING_LENGTH_A / (zi.pow(SCREENING_POWER) + zj.pow(SCREENING_POWER))
    return COULOMB_EV_A * zi * zj / lengths * zbl_screening(lengths / a)


def covalent_radii() -> torch.Tensor:
    """Covalent radii (Å) by atomic number, (119,) float64 (Cordero et al. 2008 via ``ase.data``)."""
    from ase.data import covalent_radii as radii

    return torch.as_tensor(radii[:119], dtype=torch.float64)


class ZBLRepulsion(nn.Module):
    """Sum of smoothly cut-off ZBL pair energies over a graph's edges.

    Args:
        cutoff: the pairs' cutoff: a distance (Å) or ``"covalent"`` (r_c = r_cov(Z_i) + r_cov(Z_j)).
        elements: atomic numbers the model is built for; with ``max_cutoff`` it checks that every
            pair's cutoff lies inside the neighbour list's radius.
        max_cutoff: the neighbour list's radius (Å); pairs beyond it are never seen.
        p: the envelope's order (see :class:`PolynomialCutoff`).

    ``forward(graph)`` takes a graph dict whose edge list holds both directions of
    every pair within the neighbour radius (as ``molsym.data`` builds it) and returns
    ``{"energy": (B,) eV, "energies": (N,) eV}``; each directed edge gives half its
    pair's energy to its first atom.
    """

    def __init__(self, cutoff: float | str = "covalent", elements: list[int] | None = None,
                 max_cutoff: float | None = None, p: int = 6):
        super().__init__()
        if cutoff == "covalent":
            self.pair_cutoff_kind = "covalent"
            self.fixed_cutoff = None
        elif isinstance(cutoff, (int, float)) and not isinstance(cutoff, bool) and cutoff > 0:
            self.pair_cutoff_kind = "fixed"
            self.fixed_cutoff = float(cutoff)
        else:
            raise ValueError(f"ZBL cutoff must be a positive distance (Å) or 'covalent', got {cutoff!r}")
        self.register_buffer("radii", covalent_radii(), persistent=False)
        self.envelope = PolynomialCutoff(1.0, p)
        self.cutoff = self._largest_cutoff(elements)
        if max_cutoff is not None and self.cutoff > max_cutoff:
            raise ValueError(f"ZBL cutoff {self.cutoff:.3f} Å (largest pair of elements {elements}) exceeds the "
                             f"neighbour list's cutoff {max_cutoff} Å: pairs beyond it would be cut off abruptly")

    def _largest_cutoff(self, elements: list[int] | None) -> float:
        if self.fixed_cutoff is not None:
            return self.fixed_cutoff
        if not elements:
            return float(2.0 * self.radii.max())
        return float(2.0 * self.radii[torch.as_tensor(elements)].max())

    def pair_cutoffs(self, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
        """Cutoff (Å) of each pair of atomic numbers (E,)."""
        if self.fixed_cutoff is not None:
            return torch.full(z_i.shape, self.fixed_cutoff, dtype=self.radii.dtype, device=z_i.device)
        return self.radii.index_select(0, z_i.long()) + self.radii.index_select(0, z_j.long())

    def pair_energies(self, lengths: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
        """E_ij (eV) of pairs at ``lengths`` (E,) Å, envelope included; 0 beyond each pair's cutoff."""
        cutoffs = self.pair_cutoffs(z_i, z_j).to(lengths.dtype)
        return zbl_pair_energy(lengths, z_i, z_j) * self.envelope(lengths / cutoffs)

    def atomic_energies(self, atomic_numbers: torch.Tensor, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Repulsion energy per atom (N,) eV from atomic numbers (N,) and the graph's positions, edges and shifts."""
        pos, (i, j) = graph[K.POSITIONS], graph[K.EDGE_INDEX]
        vectors = pos.index_select(0, j) - pos.index_select(0, i) + graph[K.EDGE_SHIFT]
        lengths = vectors.pow(2).sum(-1).sqrt()
        z = atomic_numbers
        half = 0.5 * self.pair_energies(lengths, z.index_select(0, i), z.index_select(0, j))
        return scatter_sum(half, i, pos.shape[0])

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        atomic = self.atomic_energies(graph[K.ATOMIC_NUMBERS], graph)
        energy = scatter_sum(atomic, graph[K.BATCH], graph[K.CELL].shape[0])
        return {K.ENERGY: energy, K.ATOMIC_ENERGIES: atomic}

    def extra_repr(self) -> str:
        return f"cutoff={self.pair_cutoff_kind if self.fixed_cutoff is None else self.fixed_cutoff}"


def repulsion_config(value, elements: list[int], max_cutoff: float) -> dict | None:
    """The normalised ``repulsion`` entry of a model config: None, or ``{"type": "zbl", "cutoff": C}`` with C a
    distance (Å) or "covalent" (the default); raises ValueError naming the problem."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"model config: 'repulsion' must be null or a mapping such as {{'type': 'zbl'}}, got {value!r}")
    unknown = sorted(set(value) - {"type", "cutoff"})
    if unknown:
        raise ValueError(f"model config: 'repulsion' has unknown key(s) {unknown}; known keys are ['cutoff', 'type']")
    if value.get("type") != "zbl":
        raise ValueError(f"model config: 'repulsion.type' must be 'zbl', got {value.get('type')!r}")
    cutoff = value.get("cutoff", "covalent")
    try:
        ZBLRepulsion(cutoff, elements=elements, max_cutoff=max_cutoff)
    except ValueError as error:
        raise ValueError(f"model config: 'repulsion': {error}") from None
    return {"type": "zbl", "cutoff": cutoff if cutoff == "covalent" else float(cutoff)}


def build_repulsion(config: dict | None, elements: list[int], max_cutoff: float) -> ZBLRepulsion | None:
    """The module of a normalised ``repulsion`` entry (None for none)."""
    if config is None:
        return None
    return ZBLRepulsion(config["cutoff"], elements=elements, max_cutoff=max_cutoff)
