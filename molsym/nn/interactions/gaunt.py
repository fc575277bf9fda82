"""Gaunt family (Luo, Chen & Krishnapriyan, ICLR 2024): convolutions and many-body products on
the sphere, evaluated as pointwise products of functions (``molsym.o3``'s grid or 2D Fourier
backend) instead of Clebsch-Gordan contractions.

Node features: the spherical form of ``molsym.nn.forms``, (N, S, (lmax+1)^2, C), read as the
coefficients of C functions on the sphere per parity class, f_s(r̂) = Σ_lm x[s, lm] Y_lm(r̂)
in e3nn's component normalisation (Σ_m Y_lm² = 2l + 1, so a constant 1 has coefficient 1 and
products of constants multiply); projections Proj are onto the same basis,
c_lm = (1/4π) ∫ h Y_lm dΩ, so with the Gaunt coefficients G of ``molsym.o3.gaunt``
(integral normalisation) the component ones are √(4π) G. One layer, with h = Linear(x):

* **convolution**: for the edge j -> i with filter
  F_ij(r̂) = Σ_l2<=sh_lmax w_l2(|r_ij|) Y_l2(r̂_ij) . Y_l2(r̂) = Σ_l2 w_l2 (2 l2 + 1) P_l2(r̂_ij . r̂)
  (radial MLP weights per degree and channel; the addition theorem),

      m_i^s   = (1/avg_num_neighbors) Σ_j Proj_lmax [h_j^s F_ij]                    (even paths)
      m_i^1-s += (1/avg_num_neighbors) Σ_j Proj_lmax {h_j^s, F'_ij}                 (odd paths)

  the Gaunt product (every path l1 + l2 + l3 even, parity class kept) and, with
  ``odd_paths``, the Poisson bracket {f, g} = r̂ . (∇f x ∇g) with its own radial weights
  (every path with l1 + l2 + l3 odd, e.g. 1o x 1o -> 1e; it switches the parity class), so the
  features reach both classes. Values of h_j on the grid are computed once per node, the
  filter's per edge from the Legendre addition theorem, the products and the neighbour sum on
  grid values, then one projection per node (two on the fft backend, whose bracket values
  carry a sin θ).
* **product basis** (many-body self-interaction, MACE's in spirit): from the messages' class 0,
  a_k = Linear_k(m^0), k = 1..correlation, and B = Proj_lmax Σ_ν<=correlation a_1 ... a_ν by
  repeated pointwise products on a grid exact for degree correlation x lmax (no return to
  coefficients in between): body order correlation + 1. The pseudotensor class enters
  linearly.
* x' = x + Gate(Linear(B)) + SelfInteraction(x): the gate of the eSCN layer (silu on 0e, tanh
  on 0o, sigmoid gates from the messages' 0e scalars on every l >= 1 block) and the residual
  of ``molsym.nn.forms.residual``.

Cost per edge and channel: O(P L_sh) for the filter and O(P) for the product, P the grid's
points (O(L²)); per node O(L³) for the transforms, against O(L^6) for a Clebsch-Gordan
convolution. Backends (``backend``): "grid" (Gauss-Legendre x uniform), "fft" (2D Fourier
basis, ``molsym.o3.fourier2d``), "auto" = "grid" (``molsym.nn.gaunt_product``); both give the
same model to rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from molsym.nn.chunking import chunk_length
from molsym.nn.forms import SPHERICAL, ChannelMap, FeatureForm, residual
from molsym.nn.gaunt_product import BACKENDS, degree_index, make_sampler
from molsym.nn.geometry import EdgeGeometry
from molsym.nn.interactions.base import (
    Family, Interaction, RadialNetwork, check_non_negative_int, check_one_of, check_positive_float,
    check_positive_int,
)
from molsym.nn.interactions.e3nn_conv import E3nnEmbedding, E3nnInvariants, e3nn_embedding_form, e3nn_input_form
from molsym.nn.interactions.escn import SpatialGate
from molsym.o3.grid_products import grid_products, native_products, product_kernel
from molsym.o3.sphere_grid import GaussGrid

MAX_CORRELATION = 3


@dataclass(frozen=True)
class GauntSettings:
    """Keys of a Gaunt layer: channels C, degrees 0..lmax, correlation (1..3: product-basis
    order, body order correlation + 1), the filter degree sh_lmax (None: lmax), odd_paths
    (the Poisson bracket's pseudotensor paths), backend ("grid", "fft", "auto"), the radial
    network (num_radial functions in, radial_hidden units) and avg_num_neighbors."""

    channels: int = 128
    lmax: int = 2
    correlation: int = 3
    sh_lmax: int | None = None
    odd_paths: bool = True
    backend: str = "auto"
    num_radial: int = 32
    radial_hidden: int = 64
    avg_num_neighbors: float = 16.0

    def __post_init__(self):
        check_positive_int("channels", self.channels)
        check_non_negative_int("lmax", self.lmax)
        check_positive_int("correlation", self.correlation)
        if self.correlation > MAX_CORRELATION:
            raise ValueError(f"'correlation' must be 1..{MAX_CORRELATION}, got {self.correlation!r}")
        if self.sh_lmax is not None:
            check_non_negative_int("sh_lmax", self.sh_lmax)
        if not isinstance(self.odd_paths, bool):
            raise ValueError(f"'odd_paths' must be true or false, got {self.odd_paths!r}")
        check_one_of("backend", self.backend, BACKENDS)
        check_positive_int("num_radial", self.num_radial)
        check_positive_int("radial_hidden", self.radial_hidden)
        check_positive_float("avg_num_neighbors", self.avg_num_neighbors)

    @property
    def filter_lmax(self) -> int:
        return self.lmax if self.sh_lmax is None else self.sh_lmax


def _has_bracket(settings: GauntSettings, lmax_in: int) -> bool:
    """Whether the bracket contributes: it vanishes when either function is constant or lmax = 0."""
    return settings.odd_paths and min(lmax_in, settings.filter_lmax, settings.lmax) >= 1


def gaunt_output_form(settings: GauntSettings, input_form: FeatureForm) -> FeatureForm:
    """C channels up to lmax; both parity classes with the bracket or when the input has them."""
    parities = 2 if _has_bracket(settings, input_form.lmax) or input_form.parities == 2 else 1
    return FeatureForm.spherical(settings.channels, settings.lmax, parities)


def legendre_kernels(cosines: torch.Tensor, lmax: int, derivative: bool) -> tuple[torch.Tensor, ...]:
    """(2l + 1) P_l(t) for l = 0..lmax (the addition theorem's Σ_m Y_lm(a) Y_lm(b) in the component
    normalisation, t = a . b):
    cosines (...,) -> (..., lmax + 1); with ``derivative`` also d/dt."""
    p = [torch.ones_like(cosines), cosines]
    dp = [torch.zeros_like(cosines), torch.ones_like(cosines)]
    for l in range(2, lmax + 1):
        p.append(((2 * l - 1) * cosines * p[l - 1] - (l - 1) * p[l - 2]) / l)
        dp.append(l * p[l - 1] + cosines * dp[l - 1])
    scale = torch.tensor([2 * l + 1 for l in range(lmax + 1)], dtype=cosines.dtype,
                         device=cosines.device)
    values = torch.stack(p[:lmax + 1], dim=-1) * scale
    return (values, torch.stack(dp[:lmax + 1], dim=-1) * scale) if derivative else (values,)


class GauntConvolution(nn.Module):
    """The convolution of the module docstring on a sampler (grid or torus): h (N, S_in, D_in, C) ->
    messages (N, S_out, D_out, C), given per directed edge the unit vectors and radial weights.

    In component coefficients: the sender's function is √(4π) times the sampler's synthesis of h
    (which reads integral-normalised coefficients) and the message 1/√(4π) times the projection:
    the two factors cancel."""

    def __init__(self, lmax_in: int, filter_lmax: int, lmax_out: int, parities_in: int, parities_out: int,
                 bracket: bool, backend: str):
        super().__init__()
        self.lmax_in, self.filter_lmax, self.lmax_out = lmax_in, filter_lmax, lmax_out
        self.parities_in, self.parities_out, self.bracket = parities_in, parities_out, bracket
        self.sampler = make_sampler(backend, lmax_in + filter_lmax, lmax_out, {lmax_in})
        self.separate_bracket = backend == "fft"  # the torus projects s{f, F} with its own table

    CHUNK_VALUES = 1 << 19

    def forward(self, h: torch.Tensor, unit: torch.Tensor, weights: torch.Tensor, odd_weights: torch.Tensor | None,
                edge_index: torch.Tensor, inv_avg_neighbors: float) -> torch.Tensor:
        """h (N, S_in, D_in, C); unit (D, 3) r̂_ij and weights, odd_weights (D, L_sh + 1, C) per
        directed edge (i, j) = edge_index (2, D) -> (N, S_out, D_out, C).

        Eager calls take the edges in chunks of about ``CHUNK_VALUES`` grid values per message
        (``molsym.nn.chunking``), summed onto the receivers as they come; a trace or a compiled
        graph takes one pass."""
        n, s_in, c = h.shape[0], h.shape[1], h.shape[-1]
        sampler = self.sampler
        values = sampler.values(h, self.lmax_in)  # (N, S_in, P, C)
        curls = sampler.gradient(h, self.lmax_in) if self.bracket else None  # (N, S_in, P, C) each
        points = sampler.points.to(unit.dtype).T  # (3, P)
        frame = [e.to(unit.dtype).T for e in sampler.curl_frame()] if self.bracket else None  # (3, P) each
        size = chunk_length(unit.shape[0], sampler.num_points * s_in * c, self.CHUNK_VALUES, h.device)
        if size is None:
            chunks = [(unit, weights, odd_weights, edge_index)]
        else:  # split, not sliced per chunk: the backward of a split is one concatenation
            odd_chunks = odd_weights.split(size) if self.bracket else [None] * -(-unit.shape[0] // size)
            chunks = zip(unit.split(size), weights.split(size), odd_chunks, edge_index.split(size, dim=1))
        even = values.new_zeros(n, s_in, sampler.num_points, c)
        odd = values.new_zeros(n, s_in, sampler.num_points, c) if self.bracket else None
        for chunk_unit, chunk_weights, chunk_odd_weights, (i, j) in chunks:
            cosines = chunk_unit @ points  # (E, P)
            kernels = legendre_kernels(cosines, self.filter_lmax, self.bracket)
            even.index_add_(0, i, values.index_select(0, j) * torch.bmm(kernels[0], chunk_weights).unsqueeze(1))
            if self.bracket:
                a, b = curls
                # r̂_ij . (a E1 - b E2) at every point: the sender's curl seen along the edge
                along_first, along_second = chunk_unit @ frame[0], chunk_unit @ frame[1]  # (E, P)
                curl = (a.index_select(0, j) * along_first[:, None, :, None]
                        - b.index_select(0, j) * along_second[:, None, :, None])  # (E, S_in, P, C)
                odd.index_add_(0, i, curl * torch.bmm(kernels[1], chunk_odd_weights).unsqueeze(1))
        if self.parities_out > s_in:
            even = torch.cat((even, torch.zeros_like(even)), dim=1)
        even = even * inv_avg_neighbors  # (N, S_out, P, C)
        if not self.bracket:
            return sampler.project(even, self.lmax_out)
        odd = odd.flip(1) if s_in == 2 else torch.cat((torch.zeros_like(odd), odd), dim=1)
        odd = odd * inv_avg_neighbors
        if self.separate_bracket:
            return sampler.project(even, self.lmax_out) + sampler.project_bracket(odd, self.lmax_out)
        return sampler.project(even + odd, self.lmax_out)


class ProductBasis(nn.Module):
    """B = Proj_lmax Σ_ν<=correlation a_1 ... a_ν, a_k = Linear_k(m class 0), plus a linear map of
    class 1: (N, S, D, C) -> (N, S, D, C). Component normalisation: each factor's values are √(4π)
    times the synthesis, the projection is divided by √(4π).

    Evaluated in Horner form, a_1 (1 + a_2 (1 + a_3)): the constant 1 enters the last factor's
    coefficients (√(4π) on Y_00 in the integral normalisation), so the grid holds one product
    per factor after the first and no sums; the factors' linear maps run as one batched product.
    Eager evaluation on CPU with the grid backend (eval mode, or no gradients recorded) runs the
    products in the fused kernel of ``molsym.o3.grid_products`` (first derivatives included;
    ``native = False`` or ``MOLSYM_NATIVE=0`` turns it off). Otherwise eager calls on CPU take
    the nodes in chunks of about ``CHUNK_VALUES`` grid values per factor, so that a chunk's
    values stay in cache (L = 4, 1,000 nodes, 16 and 64 channels, one thread: 0.5-0.75x the time
    of one pass, forward and backward); on a GPU the chunks are far larger
    (``molsym.nn.chunking``), and a trace or a compiled graph takes one pass (a trace would
    freeze the example's number of chunks).
    """

    CHUNK_VALUES = 1 << 19

    def __init__(self, form: FeatureForm, correlation: int, backend: str):
        super().__init__()
        even = FeatureForm.spherical(form.channels, form.lmax)
        self.lmax = form.lmax
        self.factors = nn.ModuleList(ChannelMap(even, even) for _ in range(correlation))
        self.pseudo = ChannelMap(even, even) if form.parities == 2 else None
        self.sampler = make_sampler(backend, correlation * form.lmax, form.lmax, {form.lmax})
        self.root_4pi = math.sqrt(4 * math.pi)
        self.register_buffer("degree_of_component", degree_index(form.lmax), persistent=False)
        self.native = True

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        # (K, D, C_in, C_out) weights of the K factors, √(4π) for the integral-normalised coefficients
        weight = torch.stack([f.weight[0] for f in self.factors]).index_select(1, self.degree_of_component)
        weight = weight * self.root_4pi
        classes = m.unbind(1)  # the backward of unbind is one stack; slicing would fill zeros and copy twice
        x = classes[0]
        if self._use_kernel(x):
            # the K maps as one product per component, (N, C) @ (C, K C): the factors land as (D, N, K, C),
            # read by the kernel through strides, and the input gradient is again one product
            k, d, c = weight.shape[0], weight.shape[1], weight.shape[-1]
            stacked = weight.permute(1, 2, 0, 3).reshape(d, weight.shape[2], k * c)
            coefficients = torch.bmm(x.transpose(0, 1), stacked).view(d, -1, k, c).permute(2, 0, 1, 3)
            kernel = product_kernel(self.sampler.band, self.lmax, 1.0 / self.root_4pi)
            out = grid_products(coefficients, kernel, 1.0 if len(self.factors) > 1 else 0.0, self._products)
        else:
            size = chunk_length(m.shape[0], self.sampler.num_points * m.shape[-1], self.CHUNK_VALUES, m.device)
            if size is None:
                out = self._products(torch.matmul(x.transpose(0, 1), weight))
            else:  # split, not sliced per chunk: the backward of a split is one concatenation
                out = torch.cat([self._products(torch.matmul(part.transpose(0, 1), weight)) for part in x.split(size)])
        out = out.unsqueeze(1)
        if self.pseudo is None:
            return out
        return torch.cat((out, self.pseudo(classes[1].unsqueeze(1))), dim=1)

    def _use_kernel(self, x: torch.Tensor) -> bool:
        """The fused kernel serves evaluation (eval mode, or no gradients recorded); training
        differentiates forces again, which the PyTorch path does at its own speed without also
        running the kernel's forward."""
        return (self.native and not (self.training and torch.is_grad_enabled())
                and isinstance(self.sampler, GaussGrid) and native_products(x))

    def _products(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The K factors' coefficients (K, D, N, C) -> Proj_lmax Σ_ν a_1 ... a_ν (N, D, C)."""
        coefficients = list(coefficients.unbind(0))  # K x (D, N, C)
        if len(coefficients) > 1:
            constant = torch.zeros_like(coefficients[-1][:, :1, :1])
            constant[0] = self.root_4pi  # the function 1 (integral normalisation)
            coefficients[-1] = coefficients[-1] + constant
        values = [self.sampler.values(a.transpose(0, 1), self.lmax) for a in coefficients]  # K x (N, P, C)
        total = values[-1]
        for factor in reversed(values[1:-1]):
            total = (factor * total).add_(1.0)  # in place: the product's layout (P, N, C) is kept
        if len(values) > 1:
            total = values[0] * total
        return self.sampler.project(total, self.lmax) / self.root_4pi


class GauntLayer(Interaction):
    """One Gaunt layer (see the module docstring)."""

    def __init__(self, settings: GauntSettings, input_form: FeatureForm):
        super().__init__()
        if input_form.kind != SPHERICAL:
            raise ValueError(f"a Gaunt layer takes the spherical form, got {input_form.describe()}")
        c, lsh = settings.channels, settings.filter_lmax
        self.input_form = input_form
        self.output_form = gaunt_output_form(settings, input_form)
        self.num_radial = settings.num_radial
        self.inv_avg_neighbors = 1.0 / settings.avg_num_neighbors
        self.bracket = _has_bracket(settings, input_form.lmax)
        self.weight_shape = (lsh + 1, c)
        self.linear_in = ChannelMap(input_form, FeatureForm.spherical(c, input_form.lmax, input_form.parities))
        self.radial_mlp = nn.Sequential(
            nn.Linear(settings.num_radial, settings.radial_hidden), nn.SiLU(),
            nn.Linear(settings.radial_hidden, (2 if self.bracket else 1) * (lsh + 1) * c),
        )
        self.convolution = GauntConvolution(input_form.lmax, lsh, settings.lmax, input_form.parities,
                                            self.output_form.parities, self.bracket, settings.backend)
        self.product_basis = ProductBasis(self.output_form, settings.correlation, settings.backend)
        self.linear_out = ChannelMap(self.output_form, self.output_form)
        self.gate = SpatialGate(self.output_form)
        self.self_interaction = ChannelMap(input_form, self.output_form)

    def radial_networks(self) -> list[RadialNetwork]:
        return [RadialNetwork(self.radial_mlp, self.num_radial)]

    def edge_inputs(self, geometry: EdgeGeometry):
        """Per directed edge (``geometry.directed_index``): r̂_ij (D, 3), even and odd radial
        weights (D, L_sh + 1, C) (odd None without the bracket)."""
        weights = geometry.directed(geometry.pair_weights(self.radial_mlp, self.num_radial))
        weights = weights.unflatten(1, (-1,) + self.weight_shape)  # (D, 1 or 2, L_sh + 1, C)
        unit = geometry.directed(geometry.pair_unit, odd=True)
        return unit, weights[:, 0], weights[:, 1] if self.bracket else None

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        """features (N, S_in, D_in, C_in) of ``input_form`` -> (N, S, D, C) of ``output_form``."""
        h = self.linear_in(features)
        unit, weights, odd_weights = self.edge_inputs(geometry)
        messages = self.convolution(h, unit, weights, odd_weights, geometry.directed_index, self.inv_avg_neighbors)
        update = self.gate(self.linear_out(self.product_basis(messages)), messages) + self.self_interaction(features)
        skip = residual(features, self.input_form, self.output_form)
        return update if skip is None else skip + update


GAUNT = Family(
    name="gaunt",
    settings=GauntSettings,
    input_form=e3nn_input_form,
    output_form=gaunt_output_form,
    embedding_form=e3nn_embedding_form,
    embedding=E3nnEmbedding,
    interaction=GauntLayer,
    invariants=E3nnInvariants,
)
