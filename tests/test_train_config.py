"""The training config is validated before any work starts, with messages that name the key."""
from __future__ import annotations

import pytest

from molsym.train.cli import main
from molsym.train.config import ConfigError, load_config, parse_duration, validate_config
from train_helpers import SUBSET, tiny_config, write_config


def test_defaults_filled_and_paths_resolved(tmp_path):
    config = validate_config({"data": {"train": SUBSET.name}}, base_dir=SUBSET.parent)
    assert config["data"]["train"] == [str(SUBSET)]
    assert config["optimizer"]["lr"] == 0.01 and config["schedule"]["type"] == "cosine"
    assert config["schedule"]["warmup_epochs"] == 1 and config["schedule"]["fit_to_budget"] is True
    assert config["loss"]["energy"] == 27.0 and config["loss"]["forces"] == 1000.0
    assert config["data"]["batch_size"] == "auto" and config["epochs"] == "auto"
    assert config["guard"]["factor"] == 10.0 and config["guard"]["max_nonfinite"] == 3
    assert config["model"] == {"family": "tensornet", "channels": 32, "layers": 2, "cutoff": 4.5, "num_radial": 8,
                               "radial_hidden": 64}
    assert config["ema"]["decay"] == 0.99 and config["dtype"] == "float64"
    assert config["output"] == str(SUBSET.parent / "runs/molsym")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epocs": 3}, "epocs: unknown key (did you mean 'epochs'?)"),
        ({"data": {"train": str(SUBSET), "batch_sise": 4}}, "data.batch_sise: unknown key (did you mean 'batch_size'?)"),
        ({"data": {"train": str(SUBSET), "batch_size": "four"}}, "data.batch_size: 'four' must be a positive integer or auto"),
        ({"data": {"train": str(SUBSET), "batch_size": 0}}, "data.batch_size: 0 must be > 0"),
        ({"data": {"train": "missing.xyz"}}, "data.train: file 'missing.xyz' does not exist"),
        ({"data": {}}, "data.train: required"),
        ({"dtype": "float16"}, "dtype: 'float16' must be one of ['float32', 'float64']"),
        ({"epochs": True}, "epochs: expected integer or auto, got boolean True"),
        ({"schedule": {"type": "step"}}, "schedule.type: 'step' must be one of"),
        ({"model": {"chanels": 8}}, "unknown key 'chanels' (did you mean 'channels'?)"),
        ({"model": {"family": "mace"}}, "unknown family 'mace'"),
        ({"loss": {"energy": 0, "forces": 0}}, "every weight is 0"),
        ({"max_time": "ten minutes"}, "is not a duration"),
        ({"optimizer": {"betas": [0.9]}}, "optimizer.betas: [0.9] must be two numbers"),
        ({"data": {"train": str(SUBSET), "e0": {"H": -13.6}}}, "data.e0: key 'H' is not an atomic number"),
        ({"epochs": "many"}, "epochs: 'many' must be a positive integer or auto"),
        ({"optimizer": {"lr": "fast"}}, "optimizer.lr: 'fast' must be a positive number or auto"),
        ({"guard": {"factor": 0.5}}, "guard.factor: 0.5 must be > 1"),
        ({"guard": {"lr_factor": 0}}, "guard.lr_factor: 0 must lie in (0, 1]"),
        ({"guard": {"windw": 5}}, "guard.windw: unknown key (did you mean 'window'?)"),
        ({"schedule": {"fit_to_budget": "yes"}}, "schedule.fit_to_budget: expected boolean"),
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
    assert code == 2 and "data.batch_size: 'zero' must be a positive integer or auto" in capsys.readouterr().err
    assert main(["train", "--help-config"]) == 0
    assert "hessian_rows" in capsys.readouterr().out


def test_learning_rate_scales_with_width():
    lrs = {c: validate_config({"data": {"train": str(SUBSET)}, "model": {"channels": c}})["optimizer"]["lr"]
           for c in (16, 32, 64, 128)}
    assert lrs == pytest.approx({16: 0.01, 32: 0.01, 64: 0.01 / 2 ** 0.5, 128: 0.005})
    given = validate_config({"data": {"train": str(SUBSET)}, "model": {"channels": 128}, "optimizer": {"lr": 0.02}})
    assert given["optimizer"]["lr"] == 0.02
    assert validate_config({"data": {"train": str(SUBSET)}, "guard": None})["guard"] is None
    from molsym.train import recipe

    stack = {"family": ["tensornet", {"family": "e3nn", "channels": 128}], "channels": 32}
    assert recipe.learning_rate(stack) == pytest.approx(0.005)
    assert "layers" not in recipe.model_config(stack) and recipe.model_config({})["layers"] == 2


def test_batch_and_epochs_scale_with_the_data():
    from molsym.train import recipe

    assert [recipe.batch_size(n) for n in (20, 450, 1000, 10**6)] == [4, 10, 22, 32]
    assert recipe.epochs(450, 10) == 134 and recipe.epochs(16, 4) == 1000 and recipe.epochs(10**6, 32) == 10
    assert recipe.resolve_data_dependent({"epochs": "auto", "data": {"batch_size": "auto"}}, 20, world_size=8) == \
        {"epochs": 1000, "data": {"batch_size": 8}}


def test_a_config_of_only_data_paths_trains_the_recipe(tmp_path):
    """Data paths alone: the recipe's model, learning rate, cosine, guard, and a batch and length for the data."""
    from molsym.train.distributed import World
    from molsym.train.loop import Run

    config = validate_config({"output": str(tmp_path / "run"), "data": {"train": str(SUBSET)}})
    run = Run(config, World(), resume=False)
    assert run.config["data"]["batch_size"] == 4 and run.config["epochs"] == 1000  # 18 structures: 5 steps
    assert run.model.config["channels"] == 32 and run.model.config["num_radial"] == 8
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.01)  # warm-up starts at 1 %
    assert run.schedule.kind == "cosine" and run.schedule.total_steps == 5000 and run.guard is not None
