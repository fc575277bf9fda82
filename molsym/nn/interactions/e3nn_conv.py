"""Reference family built from e3nn tensor products (NequIP-style convolution): the oracle.

Node features: the spherical form of ``molsym.nn.forms``, (N, S, (lmax+1)^2, C), class
s = 0 holding parity (-1)^l (0e, 1o, 2e, ...) and, when S = 2, class 1 the other parity
(0o, 1e, 2o, ...). One layer::

    m_i = (1/avg_num_neighbors) sum_j TP(Linear(x_j), Y(r̂_ij); w(|r_ij|))
    x'_i = x_i + Gate(Linear(m_i)) + SelfInteraction(x_i)

with a channel-wise ("uvu") tensor product over the paths (l1, l2, l3), l2 <= ``sh_lmax``
(default lmax), l3 <= lmax, whose weights come from a radial MLP times the smooth cutoff.
``paths``:

* ``"even"`` (default): only paths with l1 + l2 + l3 even, which keep each parity class
  (the paths a Gaunt product has); from scalar inputs the features stay in class 0;
* ``"all"``: every O(3) path, odd l1 + l2 + l3 included (e.g. 1o x 1o -> 1e, the cross
  product): both parity classes, S = 2. This is the full SO(3) convolution made O(3), the
  oracle the eSCN and Gaunt families are checked against.

The gate: silu on 0e scalars, tanh (odd, so it keeps their parity) on 0o scalars, and
sigmoid gates (0e) on every l >= 1 irrep. When a layer's input form differs from its output
form (another lmax, parity classes or channel count), the input is consumed by the
convolution and the self-interaction; the identity term embeds it exactly when the
channels agree (``molsym.nn.forms.residual``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from molsym.nn.forms import SPHERICAL, FeatureForm, residual
from molsym.nn.geometry import EdgeGeometry
from molsym.nn.interactions.base import (
    Family, Interaction, RadialNetwork, check_non_negative_int, check_one_of, check_positive_float,
    check_positive_int,
)
from molsym.nn.scatter import scatter_sum

PATHS = ("even", "all")


@dataclass(frozen=True)
class E3nnSettings:
    """Keys of an e3nn layer: channels C, degrees 0..lmax, the radial network (num_radial basis
    functions in, radial_hidden units), the neighbour normalisation avg_num_neighbors, which
    tensor-product ``paths`` ("even" or "all") and the filter degree sh_lmax (None: lmax)."""

    channels: int = 128
    lmax: int = 2
    num_radial: int = 32
    radial_hidden: int = 64
    avg_num_neighbors: float = 16.0
    paths: str = "even"
    sh_lmax: int | None = None

    def __post_init__(self):
        check_positive_int("channels", self.channels)
        check_non_negative_int("lmax", self.lmax)
        check_positive_int("num_radial", self.num_radial)
        check_positive_int("radial_hidden", self.radial_hidden)
        check_positive_float("avg_num_neighbors", self.avg_num_neighbors)
        check_one_of("paths", self.paths, PATHS)
        if self.sh_lmax is not None:
            check_non_negative_int("sh_lmax", self.sh_lmax)

    @property
    def filter_lmax(self) -> int:
        return self.lmax if self.sh_lmax is None else self.sh_lmax


def e3nn_input_form(settings: E3nnSettings, previous: FeatureForm) -> FeatureForm:
    """An e3nn layer takes any spherical form as it comes; cartesian features are placed exactly
    in the spherical form (0e + 1o + 2e, lmax 2)."""
    if previous.kind == SPHERICAL:
        return previous
    return FeatureForm.spherical(previous.channels, 2)


def e3nn_output_form(settings: E3nnSettings, input_form: FeatureForm) -> FeatureForm:
    """C channels up to lmax; both parity classes with ``paths="all"`` or when the input has them."""
    parities = 2 if settings.paths == "all" or input_form.parities == 2 else 1
    return FeatureForm.spherical(settings.channels, settings.lmax, parities)


def e3nn_embedding_form(settings: E3nnSettings) -> FeatureForm:
    """The embedding fills the 0e block of C channels up to lmax (class 0 only)."""
    return FeatureForm.spherical(settings.channels, settings.lmax)


def convolution_product(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, lmax: int, paths: str) -> o3.TensorProduct:
    """The channel-wise ("uvu") tensor product x (x) Y with per-edge weights over the paths
    (l1, l2, l3), l3 <= lmax: every O(3) path (``paths="all"``) or those with l1 + l2 + l3 even."""
    instructions, irreps_mid = [], []
    for i1, (mul, ir1) in enumerate(irreps_in):
        for i2, (_, ir2) in enumerate(irreps_sh):
            for ir3 in ir1 * ir2:
                if ir3.l <= lmax and (paths == "all" or (ir1.l + ir2.l + ir3.l) % 2 == 0):
                    instructions.append((i1, i2, len(irreps_mid), "uvu", True))
                    irreps_mid.append((mul, ir3))
    return o3.TensorProduct(irreps_in, irreps_sh, o3.Irreps(irreps_mid), instructions, shared_weights=False,
                            internal_weights=False)


def irreps_of(blocks, channels: int) -> o3.Irreps:
    """e3nn irreps of (class s, degree l) blocks: C x l with parity (-1)^(l + s)."""
    return o3.Irreps([(channels, (l, (-1) ** (l + s))) for s, l in blocks])


def form_blocks(form: FeatureForm) -> list[tuple[int, int]]:
    """(class, degree) blocks of a spherical form in the tensor's order."""
    return [(s, l) for s, l, _ in form.irreps()]


def to_e3nn_layout(x: torch.Tensor, blocks) -> torch.Tensor:
    """(N, S, D, C) -> e3nn's flat (N, sum C (2l+1)) over ``blocks`` (class, degree), channel-major
    within each block."""
    n = x.shape[0]
    return torch.cat([x[:, s, l * l:(l + 1) ** 2].transpose(1, 2).reshape(n, -1) for s, l in blocks], dim=1)


def from_e3nn_layout(x: torch.Tensor, blocks, form: FeatureForm) -> torch.Tensor:
    """Inverse of :func:`to_e3nn_layout`: flat ``blocks`` -> (N, S, D, C) of ``form``."""
    n, c = x.shape[0], form.channels
    pieces, start = {}, 0
    for s, l in blocks:
        size = c * (2 * l + 1)
        pieces[s, l] = x[:, start:start + size].reshape(n, c, 2 * l + 1).transpose(1, 2)
        start += size
    classes = [torch.cat([pieces[s, l] for l in range(form.lmax + 1)], dim=1) for s in range(form.parities)]
    return torch.stack(classes, dim=1)


class E3nnEmbedding(nn.Module):
    """Element embedding into the 0e block; every other degree starts at zero, (N, 1, D, C)."""

    message_hops = 0  # reads no neighbour (molsym.export)

    def __init__(self, settings: E3nnSettings, num_elements: int):
        super().__init__()
        self.element_embedding = nn.Embedding(num_elements, settings.channels)
        self.output_form = e3nn_embedding_form(settings)
        self.dim = (settings.lmax + 1) ** 2

    def forward(self, species: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        scalars = self.element_embedding(species)
        rest = scalars.new_zeros(scalars.shape[0], self.dim - 1, scalars.shape[1])
        return torch.cat((scalars.unsqueeze(1), rest), dim=1).unsqueeze(1)


class E3nnConvolution(Interaction):
    """Equivariant convolution with a gated nonlinearity and a residual self-interaction."""

    def __init__(self, settings: E3nnSettings, input_form: FeatureForm):
        super().__init__()
        if input_form.kind != SPHERICAL:
            raise ValueError(f"an e3nn layer takes the spherical form, got {input_form.describe()}")
        c, lmax = settings.channels, settings.lmax
        self.channels, self.lmax, self.num_radial = c, lmax, settings.num_radial
        self.inv_avg_neighbors = 1.0 / settings.avg_num_neighbors
        self.input_form = input_form
        self.output_form = e3nn_output_form(settings, input_form)
        parities = self.output_form.parities
        self.input_blocks = form_blocks(input_form)
        irreps_in = irreps_of(self.input_blocks, input_form.channels)
        irreps_hidden = irreps_of(self.input_blocks, c)
        irreps_sh = o3.Irreps.spherical_harmonics(settings.filter_lmax)
        self.filter_lmax = settings.filter_lmax
        self.linear_in = o3.Linear(irreps_in, irreps_hidden)
        self.tensor_product = convolution_product(irreps_hidden, irreps_sh, lmax, settings.paths)
        irreps_mid = self.tensor_product.irreps_out
        self.radial_mlp = FullyConnectedNet(
            [settings.num_radial, settings.radial_hidden, self.tensor_product.weight_numel], torch.nn.functional.silu
        )
        # gate output order: scalars (0e, then 0o), then gated class 0 (1o, 2e, ...), then class 1 (1e, 2o, ...)
        scalar_blocks = [(s, 0) for s in range(parities)]
        gated_blocks = [(s, l) for s in range(parities) for l in range(1, lmax + 1)]
        self.output_blocks = scalar_blocks + gated_blocks
        gated = irreps_of(gated_blocks, c)
        self.gate = Gate(
            irreps_of(scalar_blocks, c), [torch.nn.functional.silu, torch.tanh][:parities],
            o3.Irreps([(gated.num_irreps, (0, 1))]) if gated_blocks else o3.Irreps(""),
            [torch.sigmoid] if gated_blocks else [],
            gated,
        )
        self.linear_out = o3.Linear(irreps_mid.simplify(), self.gate.irreps_in)
        self.self_interaction = o3.Linear(irreps_in, self.gate.irreps_out)

    def radial_networks(self) -> list[RadialNetwork]:
        return [RadialNetwork(self.radial_mlp, self.num_radial)]

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        """features (N, S_in, D_in, C_in) of ``input_form`` -> (N, S, D, C) of ``output_form``."""
        i, j = geometry.edge_index
        x = to_e3nn_layout(features, self.input_blocks)
        h = self.linear_in(x)
        weights = geometry.per_edge(geometry.pair_weights(self.radial_mlp, self.num_radial))
        messages = self.tensor_product(h.index_select(0, j), geometry.spherical_harmonics(self.filter_lmax), weights)
        aggregated = scatter_sum(messages, i, x.shape[0]) * self.inv_avg_neighbors
        update = self.gate(self.linear_out(aggregated)) + self.self_interaction(x)
        update = from_e3nn_layout(update, self.output_blocks, self.output_form)
        skip = residual(features, self.input_form, self.output_form)
        return update if skip is None else skip + update


class E3nnInvariants(nn.Module):
    """The 0e block, (N, C)."""

    def __init__(self, settings: E3nnSettings, form: FeatureForm):
        super().__init__()
        if form.kind != SPHERICAL:
            raise ValueError(f"e3nn invariants read the spherical form, got {form.describe()}")
        self.channels = form.channels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, 0, 0]


E3NN = Family(
    name="e3nn",
    settings=E3nnSettings,
    input_form=e3nn_input_form,
    output_form=e3nn_output_form,
    embedding_form=e3nn_embedding_form,
    embedding=E3nnEmbedding,
    interaction=E3nnConvolution,
    invariants=E3nnInvariants,
)
