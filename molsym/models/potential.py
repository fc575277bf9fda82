"""The Potential: embedding -> interactions -> readout, for every family and mixed stacks."""
from __future__ import annotations

import torch
from torch import nn

from molsym.data import keys as K
from molsym.heads.energy import EnergyReadout
from molsym.heads.registry import build_heads
from molsym.heads.representation import Representation
from molsym.models.builder import embedding_form, layer_specs, normalise_config
from molsym.nn.forms import FormConverter, canonical_features
from molsym.nn.geometry import GeometryBuilder
from molsym.nn.repulsion import build_repulsion
from molsym.nn.scatter import scatter_sum


class Potential(nn.Module):
    """Machine-learned interatomic potential.

    ``forward(graph)`` takes a graph dict (``molsym.data.keys``) and returns
    ``{"energy": (B,) eV, "energies": (N,) eV}``; with ``repulsion`` in the config the
    atomic energies include a ZBL pair prior (``molsym.nn.repulsion``). Forces, stress and Hessians
    are derivatives of the energy: see ``molsym.models.derivatives`` and
    :meth:`predict`. ``forward(graph, heads=("hessian",))`` also evaluates the configured
    heads (config key ``heads``, ``molsym.heads.registry``) on the same features, each
    output under the head's name (the Hessian head: ``"hessian"``, (3N, 3N) eV/Å²).
    """

    def __init__(self, config: dict):
        super().__init__()
        config = normalise_config(config)
        self.config = config
        elements = config["elements"]
        specs = layer_specs(config)
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("species_of_z", table, persistent=False)
        self.register_buffer("z_of_species", torch.tensor(elements, dtype=torch.long), persistent=False)
        num_radial = max(getattr(spec.settings, "num_radial", 1) for spec in specs)
        first, last = specs[0], specs[-1]
        self.embedding = first.family.embedding(first.settings, len(elements))
        form = embedding_form(specs)
        converters = []
        for index, spec in enumerate(specs, start=1):
            converters.append(FormConverter(form, spec.input_form, f"layer {index} ({spec.family.name})"))
            form = spec.output_form
        # parameter-free where the forms agree or convert exactly; a learned channel map otherwise
        self.converters = nn.ModuleList(converters)
        self.interactions = nn.ModuleList(spec.family.interaction(spec.settings, spec.input_form) for spec in specs)
        frame_lmax = max(layer.frame_lmax for layer in self.interactions)
        self.geometry = GeometryBuilder(config["cutoff"], num_radial, frame_lmax)
        self.feature_forms = [embedding_form(specs)] + [spec.output_form for spec in specs]
        self.family_names = [spec.family.name for spec in specs]
        self.compiles = all(spec.family.compiles for spec in specs)
        self.invariants = last.family.invariants(last.settings, last.output_form)
        self.readout = EnergyReadout(self.invariants.channels, len(elements))
        self.heads = build_heads(config["heads"], self.feature_forms[-1].channels)
        self._set_e0(config["e0"] or {})
        self.readout.scale.fill_(config["scale"])
        self.readout.shift.fill_(config["shift"])
        # optional short-range prior added to the atomic energies (not scaled by the readout)
        self.repulsion = build_repulsion(config["repulsion"], elements, config["cutoff"])

    def _set_e0(self, e0: dict[int, float]) -> None:
        """Write per-element E0 (eV, by atomic number) into the readout and the config."""
        for z, value in e0.items():
            if z not in self.elements:
                raise ValueError(f"E0 given for element {z}, which is not in this model ({self.elements})")
            self.readout.e0[self.elements.index(z)] = float(value)
        if e0:
            self.config["e0"] = {**(self.config["e0"] or {}), **{int(z): float(v) for z, v in e0.items()}}

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
            self._set_e0(e0)
        if scale is not None:
            if not scale > 0:
                raise ValueError(f"scale must be positive, got {scale}")
            self.readout.scale.fill_(float(scale))
            self.config["scale"] = float(scale)
        if shift is not None:
            self.readout.shift.fill_(float(shift))
            self.config["shift"] = float(shift)

    def radial_networks(self) -> list:
        """The interactions' radial networks (``RadialNetwork``: network, num_radial) evaluated
        through ``EdgeGeometry.pair_weights``."""
        return [network for layer in self.interactions for network in layer.radial_networks()]

    @property
    def head_names(self) -> list[str]:
        """Names of the configured heads (besides the energy readout)."""
        return list(self.heads.keys())

    def check_heads(self, names) -> None:
        """Raise ValueError naming the config key when a requested head is not configured."""
        for name in names:
            if name not in self.heads:
                configured = self.head_names or "none"
                raise ValueError(f"this model has no {name!r} head (configured heads: {configured}); build it "
                                 f"with the model config key heads: {{{name!r}: {{...}}}}")

    def forward(self, graph: dict[str, torch.Tensor], heads=()) -> dict[str, torch.Tensor]:
        return self.evaluate(self.species(graph[K.ATOMIC_NUMBERS]), self.geometry(graph), graph, heads=heads)

    def representation(self, graph: dict[str, torch.Tensor]) -> Representation:
        """What heads read: element indices, the EdgeGeometry and the final features in the
        canonical 0e + 1o + 1e + 2e form, (N, 12, C) (``molsym.heads.representation``)."""
        species, geometry = self.species(graph[K.ATOMIC_NUMBERS]), self.geometry(graph)
        features = self.node_features(species, geometry, graph)
        return Representation(species, geometry, canonical_features(features, self.feature_forms[-1]), graph)

    def node_features(self, species: torch.Tensor, geometry, graph: dict[str, torch.Tensor],
                      stage_geometries=None) -> torch.Tensor:
        """Final node features, of form ``feature_forms[-1]`` (``molsym.nn.forms``).

        ``stage_geometries``: optionally one EdgeGeometry per stage (the embedding, then each
        interaction) in place of ``geometry``, e.g. with the edges a host's domain needs at each
        depth (``molsym.export``); the features are then exact only where every stage had all
        the edges into the node and its receptive field."""
        stages = stage_geometries if stage_geometries is not None else [geometry] * (len(self.interactions) + 1)
        features = self.embedding(species, stages[0], graph)
        for convert, interaction, stage in zip(self.converters, self.interactions, stages[1:]):
            features = interaction(convert(features), stage, graph)
        return features

    def evaluate(self, species: torch.Tensor, geometry, graph: dict[str, torch.Tensor],
                 heads=(), stage_geometries=None) -> dict[str, torch.Tensor]:
        """Energies from element indices (N,), an :class:`EdgeGeometry` and the graph (batch, cell),
        and the outputs of the named ``heads`` under their names (``stage_geometries``: see
        :meth:`node_features`)."""
        self.check_heads(heads)
        if stage_geometries is not None and len(stage_geometries) != len(self.interactions) + 1:
            raise ValueError(f"stage_geometries needs {len(self.interactions) + 1} geometries (the embedding and "
                             f"each interaction), got {len(stage_geometries)}")
        features = self.node_features(species, geometry, graph, stage_geometries)
        atomic = self.readout(self.invariants(features), species)
        if self.repulsion is not None:
            atomic = atomic + self.repulsion.atomic_energies(self.z_of_species.index_select(0, species), graph)
        num_graphs = graph[K.CELL].shape[0]
        energy = scatter_sum(atomic, graph[K.BATCH], num_graphs)
        out = {K.ENERGY: energy, K.ATOMIC_ENERGIES: atomic}
        if heads:
            representation = Representation(species, geometry, canonical_features(features, self.feature_forms[-1]),
                                            graph)
            for name in heads:
                out[name] = self.heads[name](representation)
        return out

    def predict(self, atoms, *, stress: bool | None = None, hessian: bool | str = False, batch_size: int = 32):
        """Energies and forces of one ``ase.Atoms`` or a list of them; see ``molsym.models.predict``."""
        from molsym.models.predict import predict

        return predict(self, atoms, stress=stress, hessian=hessian, batch_size=batch_size)
