"""Per-layer settings: each family's own keys, global defaults, clear errors naming layer and key."""
from __future__ import annotations

import pytest
import torch
import yaml

import molsym
from molsym.models.builder import layer_specs, normalise_config
from molsym.nn.forms import ChannelMap, FeatureForm
from molsym.nn.interactions.e3nn_conv import E3nnSettings
from molsym.nn.interactions.tensornet import TensorNetSettings

ELEMENTS = [1, 6, 8]


def test_a_list_of_per_layer_mappings_overrides_the_global_keys():
    config = {"elements": ELEMENTS, "channels": 8, "num_radial": 6,
              "family": ["tensornet", {"family": "e3nn", "lmax": 3, "paths": "all", "radial_hidden": 16}]}
    specs = layer_specs(normalise_config(config))
    assert specs[0].settings == TensorNetSettings(channels=8, num_radial=6)
    assert specs[1].settings == E3nnSettings(channels=8, lmax=3, num_radial=6, radial_hidden=16, paths="all")
    model = molsym.Potential.from_config(config)
    assert model.config["layers"] == 2  # the list's length
    assert model.feature_forms[-1] == FeatureForm.spherical(8, 3, parities=2)


def test_family_keys_at_the_top_level_reach_the_layers_that_declare_them():
    model = molsym.Potential.from_config({"elements": ELEMENTS, "channels": 4, "family": ["tensornet", "e3nn"],
                                          "paths": "all"})
    assert model.interactions[1].output_form.parities == 2
    assert layer_specs(model.config)[0].settings == TensorNetSettings(channels=4)


@pytest.mark.parametrize("config, message", [
    ({"family": "tensornet", "paths": "all"}, r"unknown key 'paths'"),
    ({"family": "tensornet", "mmax": 2}, r"unknown key 'mmax'"),
    ({"family": ["tensornet", {"family": "e3nn", "lmx": 3}]},
     r"layer 2 \(e3nn\): unknown key 'lmx' \(did you mean 'lmax'\?\)"),
    ({"family": [{"family": "tensornet", "lmax": 3}, "e3nn"]}, r"layer 1 \(tensornet\): unknown key 'lmax'"),
    ({"family": ["e3nn", {"family": "e3nn", "paths": "odd"}]},
     r"layer 2 \(e3nn\): 'paths' must be one of \['even', 'all'\]"),
    ({"family": ["e3nn", {"family": "e3nn", "channels": 0}]}, r"layer 2 \(e3nn\): 'channels' must be a positive"),
    ({"family": ["tensornet", {"lmax": 3}]}, r"layer 2: a per-layer mapping needs a 'family' key"),
    ({"family": ["tensornet", {"family": "escnn"}]}, r"layer 2: unknown family 'escnn'"),
    ({"family": ["tensornet", "e3nn"], "layers": 3}, r"a list of 3 entries"),
    # forms that would lose information are refused before anything is built
    ({"family": ["e3nn", "tensornet"], "lmax": 3}, r"layer 2 \(tensornet\).*3o would be lost"),
    ({"family": [{"family": "e3nn", "paths": "all"}, "tensornet"]}, r"layer 2 \(tensornet\).*0o\+1e\+2o would be lost"),
    ({"family": ["e3nn", {"family": "e3nn", "lmax": 1}, "tensornet"]}, None),
])
def test_bad_layer_settings_name_the_layer_and_the_key(config, message):
    config = {"elements": ELEMENTS, "channels": 4, **config}
    if message is None:  # lmax 1 -> tensornet: nothing is lost (2e is absent, filled by zeros)
        molsym.Potential.from_config(config)
        return
    with pytest.raises(ValueError, match=message):
        normalise_config(config)
    with pytest.raises(ValueError, match=message):
        molsym.Potential.from_config(config)


def test_channel_changes_get_a_learned_equivariant_map():
    model = molsym.Potential.from_config({"elements": ELEMENTS, "channels": 8, "num_radial": 8,
                                          "family": ["tensornet", {"family": "tensornet", "channels": 4}, "e3nn"]})
    maps = [type(c.channel_map) for c in model.converters]
    assert maps == [type(None), ChannelMap, type(None)]
    # the e3nn layer (global 8 channels) takes the 4 channels as they come, through its own linear maps
    assert model.interactions[2].input_form == FeatureForm.spherical(4, 2)
    assert model.feature_forms[-1] == FeatureForm.spherical(8, 2)
    assert model.readout.mlp[0].in_features == 8


def test_per_layer_radial_basis_reads_the_first_functions_of_the_shared_basis():
    model = molsym.Potential.from_config({"elements": ELEMENTS, "channels": 4,
                                          "family": [{"family": "tensornet", "num_radial": 4}, "tensornet"],
                                          "num_radial": 8})
    assert model.geometry.radial_basis.frequencies.numel() == 8
    assert [k for _, k in model.radial_networks()] == [4, 8]
    assert model.interactions[0].radial_mlp[0].in_features == 4


def test_config_stays_plain_data_through_yaml():
    config = {"elements": ELEMENTS, "channels": 4, "num_radial": 6,
              "family": ["tensornet", {"family": "e3nn", "lmax": 3}]}
    torch.manual_seed(0)
    model = molsym.Potential.from_config(config)
    again = molsym.Potential.from_config(yaml.safe_load(yaml.safe_dump(model.config)))
    assert again.config == model.config
    assert set(again.state_dict()) == set(model.state_dict())
