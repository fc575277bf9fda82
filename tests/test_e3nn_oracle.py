"""The e3nn reference family with every O(3) path: pseudotensor features, exact equivariance.

With ``paths="all"`` the features carry both parity classes; under an improper rotation the
class-1 blocks (0o, 1e, 2o) pick up the extra sign of their parity, which a test of the energy
alone would not see. With ``paths="even"`` (the default) the numbers are those of the
checkpoints written before the parity-complete form (tests/test_legacy_checkpoints.py).
"""
from __future__ import annotations

import pytest
import torch
from e3nn import o3

import molsym
from molsym.data import keys as K
from molsym.testing import random_orthogonal, transform_graph
from conftest import bpa_frames
from test_forms import rotate

pytestmark = pytest.mark.usefixtures("float64_default")  # e3nn D matrices in float64

ELEMENTS = [1, 6, 7, 8]


def oracle(lmax: int, paths: str = "all", layers: int = 2, seed: int = 0, **keys):
    torch.manual_seed(seed)
    config = {"elements": ELEMENTS, "family": "e3nn", "channels": 4, "layers": layers, "num_radial": 8,
              "radial_hidden": 16, "lmax": lmax, "paths": paths, **keys}
    return molsym.Potential.from_config(config).double().eval()


def final_features(model, graph):
    return model.node_features(model.species(graph[K.ATOMIC_NUMBERS]), model.geometry(graph), graph)


@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_features_with_pseudotensors_are_o3_equivariant(lmax):
    model = oracle(lmax)
    form = model.feature_forms[-1]
    assert form.parities == 2
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff)
    with torch.no_grad():
        x = final_features(model, graph)
        pseudo = x[:, 1].abs().max()
        # the first layer maps 0e x Y_l to class 0 only; 1o x 1o -> 1e etc. of the second layer
        # give pseudotensors of ~1e-3 here, far above round-off (1e-16)
        assert pseudo > 1e-6, "no pseudotensor features were produced"
        gen = torch.Generator().manual_seed(4)
        for parity in (False, True, True):
            r = random_orthogonal(parity=parity, generator=gen)
            moved = final_features(model, transform_graph(graph, r, torch.randn(3, generator=gen)))
            expected = rotate(x, form, r)
            assert float((moved - expected).abs().max()) < 1e-10 * float(x.abs().max())
            if parity:  # r = inversion x proper: class s, degree l picks up (-1)^(l + s), not (-1)^l
                proper = rotate(x, form, -r)
                for l in range(form.lmax + 1):
                    block = slice(l * l, (l + 1) ** 2)
                    for s in (0, 1):
                        sign = (-1) ** (l + s)
                        error = (moved[:, s, block] - sign * proper[:, s, block]).abs().max()
                        assert float(error) < 1e-10 * float(x.abs().max())


@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_all_paths_are_every_o3_path(lmax):
    model = oracle(lmax, layers=1)
    layer = model.interactions[0]
    found = {(layer.tensor_product.irreps_in1[ins.i_in1].ir, layer.tensor_product.irreps_in2[ins.i_in2].ir,
              layer.tensor_product.irreps_out[ins.i_out].ir) for ins in layer.tensor_product.instructions}
    sh = o3.Irreps.spherical_harmonics(lmax)
    expected = {(o3.Irrep(0, 1), ir2, ir3) for _, ir2 in sh for ir3 in o3.Irrep(0, 1) * ir2 if ir3.l <= lmax}
    expected |= {(ir1, ir2, ir3) for l1 in range(1, lmax + 1) for ir1 in [o3.Irrep(l1, (-1) ** l1)]
                 for _, ir2 in sh for ir3 in ir1 * ir2 if ir3.l <= lmax}
    assert found == expected
    second = oracle(lmax, layers=2).interactions[1].tensor_product
    odd = [ins for ins in second.instructions
           if (second.irreps_in1[ins.i_in1].ir.l + second.irreps_in2[ins.i_in2].ir.l
               + second.irreps_out[ins.i_out].ir.l) % 2 == 1]
    assert odd, "a second layer with both parity classes must include odd l1 + l2 + l3 paths"


def test_even_paths_are_the_default():
    default, even = oracle(2, paths="even"), oracle(2, paths="even")
    default_config = {k: v for k, v in default.config.items()}
    default_config.pop("paths")
    again = molsym.Potential.from_config(default_config).double()
    again.load_state_dict(even.state_dict())
    graph = molsym.from_ase(bpa_frames(1)[0], default.cutoff)
    with torch.no_grad():
        assert torch.equal(again(graph)[K.ENERGY], even(graph)[K.ENERGY])
    assert even.feature_forms[-1].parities == 1


def test_filter_degree_above_lmax():
    model = oracle(1, layers=1, sh_lmax=2)
    assert model.interactions[0].tensor_product.irreps_in2 == o3.Irreps.spherical_harmonics(2)
