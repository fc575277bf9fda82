"""The Potential: embedding -> interactions -> readout, for every family and mixed stacks."""
from __future__ import annotations

import torch
from torch import nn

from molsym.data import keys as K
from molsym.heads.energy import EnergyReadout
from molsym.models.builder import layer_families, normalise_config
from molsym.nn.geometry import GeometryBuilder
from molsym.nn.interactions.base import ModelSettings
from molsym.nn.scatter import scatter_sum
from molsym.o3.cartesian import irreps_to_sh_layout, sh_layout_to_irreps


def convert_features(features: torch.Tensor, source: str, target: str, lmax: int) -> torch.Tensor:
    """Exact change of feature form between families: "cartesian" <-> "sh" (N, (L+1)^2, C).

    "cartesian" features are rank-2 tensors held by their 0e + 1o + 2e coefficients
    (``molsym.o3.cartesian``), component-major (9, N, C). Degrees l <= 2 map one to one
    (0e, 1o, 2e); sh -> cartesian drops l > 2, cartesian -> sh fills l > 2 with zeros.
    """
    if source == target:
        return features
    if source == "cartesian" and target == "sh":
        return irreps_to_sh_layout(features.permute(1, 2, 0), lmax)
    if source == "sh" and target == "cartesian":
        return sh_layout_to_irreps(features).permute(2, 0, 1).contiguous()
    raise ValueError(f"no conversion from feature form {source!r} to {target!r}")


class Potential(nn.Module):
    """Machine-learned interatomic potential.

    ``forward(graph)`` takes a graph dict (``molsym.data.keys``) and returns
    ``{"energy": (B,) eV, "energies": (N,) eV}``. Forces, stress and Hessians
    are derivatives of the energy: see ``molsym.models.derivatives`` and
    :meth:`predict`.
    """

    def __init__(self, config: dict):
        super().__init__()
        config = normalise_config(config)
        self.config = config
        elements = config["elements"]
        settings = ModelSettings(
            num_elements=len(elements),
            channels=config["channels"],
            num_radial=config["num_radial"],
            cutoff=config["cutoff"],
            lmax=config["lmax"],
            radial_hidden=config["radial_hidden"],
            avg_num_neighbors=config["avg_num_neighbors"],
        )
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("species_of_z", table, persistent=False)
        families = layer_families(config)
        self.forms = [f.form for f in families]
        self.geometry = GeometryBuilder(config["cutoff"], config["num_radial"])
        self.embedding = families[0].embedding(settings)
        self.interactions = nn.ModuleList(f.interaction(settings) for f in families)
        self.invariants = families[-1].invariants(settings)
        self.readout = EnergyReadout(config["channels"], len(elements))
        if config["e0"]:
            for z, value in config["e0"].items():
                self.readout.e0[elements.index(z)] = value
        self.readout.scale.fill_(config["scale"])
        self.readout.shift.fill_(config["shift"])

    @classmethod
    def from_config(cls, config: dict) -> "Potential":
        """Build a model from a config dict (``elements`` required; see README for keys)."""
        return cls(config)

    @property
    def cutoff(self) -> float:
        """Neighbour cutoff radius, Å."""
        return self.config["cutoff"]

    @property
    def elements(self) -> list[int]:
        """Atomic numbers the model was built for."""
        return list(self.config["elements"])

    def species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers (N,) -> element indices (N,); a clear error for elements the model lacks."""
        z = atomic_numbers.long()
        if z.numel() and (int(z.min()) < 1 or int(z.max()) > 118):
            raise ValueError(f"atomic numbers must lie in 1..118, got {sorted(set(z.tolist()))}")
        species = self.species_of_z.index_select(0, z)
        if z.numel() and bool((species < 0).any()):
            missing = sorted(set(z[species < 0].tolist()))
            raise ValueError(f"element(s) with atomic number {missing} not in this model (built for {self.elements})")
        return species

    def set_energy_reference(self, e0: dict[int, float] | None = None, scale: float | None = None,
                             shift: float | None = None) -> None:
        """Set per-element E0 (eV, by atomic number), the energy scale and shift (eV)."""
        if e0:
            for z, value in e0.items():
                if z not in self.elements:
                    raise ValueError(f"E0 given for element {z}, which is not in this model ({self.elements})")
                self.readout.e0[self.elements.index(z)] = float(value)
                self.config["e0"] = {**(self.config["e0"] or {}), int(z): float(value)}
        if scale is not None:
            if not scale > 0:
                raise ValueError(f"scale must be positive, got {scale}")
            self.readout.scale.fill_(float(scale))
            self.config["scale"] = float(scale)
        if shift is not None:
            self.readout.shift.fill_(float(shift))
            self.config["shift"] = float(shift)

    def radial_networks(self) -> list[nn.Module]:
        """The interactions' radial networks evaluated through ``EdgeGeometry.pair_weights``."""
        return [network for layer in self.interactions for network in layer.radial_networks()]

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.evaluate(self.species(graph[K.ATOMIC_NUMBERS]), self.geometry(graph), graph)

    def evaluate(self, species: torch.Tensor, geometry, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Energies from element indices (N,), an :class:`EdgeGeometry` and the graph (batch, cell)."""
        lmax = self.config["lmax"]
        features = self.embedding(species, geometry, graph)
        form = self.forms[0]
        for layer_form, interaction in zip(self.forms, self.interactions):
            features = convert_features(features, form, layer_form, lmax)
            form = layer_form
            features = interaction(features, geometry, graph)
        atomic = self.readout(self.invariants(features), species)
        num_graphs = graph[K.CELL].shape[0]
        energy = scatter_sum(atomic, graph[K.BATCH], num_graphs)
        return {K.ENERGY: energy, K.ATOMIC_ENERGIES: atomic}

    def predict(self, atoms, *, stress: bool | None = None, hessian: bool = False, batch_size: int = 32):
        """Energies and forces of one ``ase.Atoms`` or a list of them; see ``molsym.models.predict``."""
        from molsym.models.predict import predict

        return predict(self, atoms, stress=stress, hessian=hessian, batch_size=batch_size)
