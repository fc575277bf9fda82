"""Feature forms and their conversions (molsym.nn.forms): exact where nothing is lost, equivariant
learned channel maps, refusal where degrees or parities would be lost."""
from __future__ import annotations

import re

import pytest
import torch
from e3nn import o3

from molsym.nn.forms import ChannelMap, FeatureForm, FormConverter, FormError, canonical_features, place
from molsym.testing import random_orthogonal


# e3nn builds Wigner-D matrices in the default dtype: exact identities need float64
pytestmark = pytest.mark.usefixtures("float64_default")


def random_features(form: FeatureForm, n: int = 5, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if form.kind == "cartesian":
        return torch.randn(9, n, form.channels, generator=gen)
    return torch.randn(n, form.parities, (form.lmax + 1) ** 2, form.channels, generator=gen)


def rotate(x: torch.Tensor, form: FeatureForm, r: torch.Tensor) -> torch.Tensor:
    """Act with the O(3) element r on features of ``form`` (class s, degree l: D of l with parity (-1)^(l+s))."""
    if form.kind == "cartesian":
        d = o3.Irreps("0e + 1o + 2e").D_from_matrix(r)
        return torch.einsum("ij,jnc->inc", d, x)
    out = torch.empty_like(x)
    for s, l, p in form.irreps():
        d = o3.Irrep(l, p).D_from_matrix(r)
        out[:, s, l * l:(l + 1) ** 2] = torch.einsum("ij,njc->nic", d, x[:, s, l * l:(l + 1) ** 2])
    return out


EXACT = [
    (FeatureForm.cartesian(3), FeatureForm.spherical(3, 2)),
    (FeatureForm.cartesian(3), FeatureForm.spherical(3, 4, parities=2)),
    (FeatureForm.spherical(3, 1), FeatureForm.cartesian(3)),
    (FeatureForm.spherical(3, 2), FeatureForm.cartesian(3)),
    (FeatureForm.spherical(3, 1), FeatureForm.spherical(3, 3)),
    (FeatureForm.spherical(3, 2), FeatureForm.spherical(3, 2, parities=2)),
]


@pytest.mark.parametrize("source, target", EXACT, ids=lambda f: f.describe())
def test_exact_conversions_keep_everything_and_commute_with_o3(source, target):
    x = random_features(source)
    y = place(x, source, target)
    assert torch.equal(place(y, target, source), x) if _holds_back(target, source) else True
    # nothing lost: the norm of every node and channel is unchanged, and the rest is zero
    assert torch.allclose(_norms(y, target), _norms(x, source), atol=1e-14)
    for parity in (False, True):
        r = random_orthogonal(parity=parity, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(place(rotate(x, source, r), source, target), rotate(y, target, r),
                                   rtol=0, atol=1e-13)


def _holds_back(a: FeatureForm, b: FeatureForm) -> bool:
    try:
        FormConverter(a, b)
        return True
    except FormError:
        return False


def _norms(x: torch.Tensor, form: FeatureForm) -> torch.Tensor:
    return (x * x).sum(0) if form.kind == "cartesian" else (x * x).sum((1, 2))


@pytest.mark.parametrize("source, target, lost", [
    (FeatureForm.cartesian(3), FeatureForm.spherical(3, 1), "2e"),
    (FeatureForm.spherical(3, 3), FeatureForm.cartesian(3), "3o"),
    (FeatureForm.spherical(3, 2, parities=2), FeatureForm.cartesian(3), "0o+1e+2o"),
    (FeatureForm.spherical(3, 3), FeatureForm.spherical(3, 2), "3o"),
    (FeatureForm.spherical(3, 1, parities=2), FeatureForm.spherical(3, 2), "0o+1e"),
])
def test_lossy_conversions_are_refused_naming_what_would_be_lost(source, target, lost):
    with pytest.raises(FormError, match=rf"layer 7 \(x\): takes .* {re.escape(lost)} would be lost"):
        FormConverter(source, target, "layer 7 (x)")


@pytest.mark.parametrize("form", [FeatureForm.cartesian(4), FeatureForm.spherical(4, 3, parities=2)],
                         ids=lambda f: f.kind)
def test_channel_maps_are_equivariant_and_mix_only_channels(form):
    torch.manual_seed(0)
    target = FeatureForm(form.kind, 6, form.lmax, form.parities)
    convert = FormConverter(form, target).double()
    assert isinstance(convert.channel_map, ChannelMap)
    x = random_features(form)
    for parity in (False, True):
        r = random_orthogonal(parity=parity, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(convert(rotate(x, form, r)), rotate(convert(x), target, r), rtol=0, atol=1e-13)


def test_cartesian_to_spherical_with_more_channels_maps_then_places():
    torch.manual_seed(0)
    source, target = FeatureForm.cartesian(2), FeatureForm.spherical(5, 3)
    convert = FormConverter(source, target).double()
    x = random_features(source)
    y = convert(x)
    assert y.shape == (5, 1, 16, 5)
    assert torch.count_nonzero(y[:, :, 9:]) == 0
    mapped = convert.channel_map(x)
    torch.testing.assert_close(y[:, 0, :9], mapped.permute(1, 0, 2), rtol=0, atol=0)


@pytest.mark.parametrize("form", [FeatureForm.cartesian(3), FeatureForm.spherical(3, 3, parities=2),
                                  FeatureForm.spherical(3, 1)], ids=lambda f: f.describe())
def test_canonical_features_are_0e_1o_1e_2e(form):
    x = random_features(form)
    canonical = canonical_features(x, form)
    assert canonical.shape == (5, 12, 3)
    d = o3.Irreps("0e + 1o + 1e + 2e")
    for parity in (False, True):
        r = random_orthogonal(parity=parity, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(canonical_features(rotate(x, form, r), form),
                                   torch.einsum("ij,njc->nic", d.D_from_matrix(r), canonical), rtol=0, atol=1e-13)
    if form.kind == "spherical" and form.parities == 2:
        torch.testing.assert_close(canonical[:, 4:7], x[:, 1, 1:4], rtol=0, atol=0)  # the axial vector
    else:
        assert torch.count_nonzero(canonical[:, 4:7]) == 0


def test_invalid_forms_are_refused():
    with pytest.raises(ValueError, match="lmax 2"):
        FeatureForm("cartesian", 3, lmax=3)
    with pytest.raises(ValueError, match="parities must be 1 or 2"):
        FeatureForm.spherical(3, 2, parities=3)
    with pytest.raises(ValueError, match="unknown feature form"):
        FeatureForm("sh", 3)
