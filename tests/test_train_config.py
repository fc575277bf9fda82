"""The training config is validated before any work starts, with messages that name the key."""
from __future__ import annotations

import pytest

from molsym.train.cli import main
from molsym.train.config import ConfigError, load_config, parse_duration, validate_config
from train_helpers import SUBSET, tiny_config, write_config


def test_defaults_filled_and_paths_resolved(tmp_path):
    config = validate_config({"data": {"train": SUBSET.name}}, base_dir=SUBSET.parent)
    assert config["data"]["train"] == [str(SUBSET)]
    assert config["optimizer"]["lr"] == 5e-3 and config["schedule"]["type"] == "plateau"
    assert config["ema"]["decay"] == 0.99 and config["dtype"] == "float64"
    assert config["output"] == str(SUBSET.parent / "runs/molsym")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epocs": 3}, "epocs: unknown key (did you mean 'epochs'?)"),
        ({"data": {"train": str(SUBSET), "batch_sise": 4}}, "data.batch_sise: unknown key (did you mean 'batch_size'?)"),
        ({"data": {"train": str(SUBSET), "batch_size": "four"}}, "data.batch_size: expected integer, got str 'four'"),
        ({"data": {"train": str(SUBSET), "batch_size": 0}}, "data.batch_size: 0 must be > 0"),
        ({"data": {"train": "missing.xyz"}}, "data.train: file 'missing.xyz' does not exist"),
        ({"data": {}}, "data.train: required"),
        ({"dtype": "float16"}, "dtype: 'float16' must be one of ['float32', 'float64']"),
        ({"epochs": True}, "epochs: expected integer, got boolean True"),
        ({"schedule": {"type": "step"}}, "schedule.type: 'step' must be one of"),
        ({"model": {"chanels": 8}}, "unknown key 'chanels' (did you mean 'channels'?)"),
        ({"model": {"family": "mace"}}, "unknown family 'mace'"),
        ({"loss": {"energy": 0, "forces": 0}}, "every weight is 0"),
        ({"max_time": "ten minutes"}, "is not a duration"),
        ({"optimizer": {"betas": [0.9]}}, "optimizer.betas: [0.9] must be two numbers"),
        ({"data": {"train": str(SUBSET), "e0": {"H": -13.6}}}, "data.e0: key 'H' is not an atomic number"),
    ],
)
def test_invalid_configs_name_the_problem(change, message):
    raw = {"data": {"train": str(SUBSET)}, **change}
    with pytest.raises(ConfigError) as error:
        validate_config(raw)
    assert message in str(error.value)


def test_every_problem_reported_at_once():
    with pytest.raises(ConfigError) as error:
        validate_config({"seeed": 1, "data": {"train": "nope.xyz"}, "optimizer": {"lr": -1}})
    text = str(error.value)
    assert "seeed" in text and "nope.xyz" in text and "optimizer.lr: -1 must be > 0" in text


def test_durations():
    assert parse_duration(90) == 90.0
    assert parse_duration("90s") == 90.0 and parse_duration("20m") == 1200.0 and parse_duration("1.5h") == 5400.0
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_yaml_is_read_safely(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    config = tiny_config(tmp_path / "run", epochs=-1)
    code = main(["train", str(write_config(tmp_path / "c.yaml", config))])
    err = capsys.readouterr().err
    assert code == 2 and "epochs: -1 must be > 0" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_set_overrides(tmp_path, capsys):
    config = tiny_config(tmp_path / "run")
    code = main(["train", str(write_config(tmp_path / "c.yaml", config)), "--set", "data.batch_size=zero"])
    assert code == 2 and "data.batch_size: expected integer, got str 'zero'" in capsys.readouterr().err
    assert main(["train", "--help-config"]) == 0
    assert "hessian_rows" in capsys.readouterr().out
