"""kcnn.config: TrainConfig's validation and JSON round trip, the recipes, the default-recipe table, replay."""

import dataclasses
import json

import pytest
from helpers import REPO, config_of_command, run_cli

from kcnn.config import (DEFAULT_LR, DEFAULT_RECIPES, RECIPES, TrainConfig, default_recipe, resolve,
                         settings_fields)

GRAY, COLOUR = (28, 28, 1), (32, 32, 3)


@pytest.mark.parametrize("dataset, model, shape, expected", [
    ("mnist", "cnn3", GRAY, "digits"),
    ("mnist", "net24k", GRAY, "digits_small"),
    ("fashion_mnist", "net24k", GRAY, "fashion"),
    ("cifar10", "cnn3", COLOUR, "cifar"),
    ("cifar100", "cnn2", COLOUR, "cifar"),
    ("cifar10", "whitened8", COLOUR, "airbench"),
    ("cifar100", "whitened8_narrow", COLOUR, "airbench"),
    ("cifar10", "resnet9", COLOUR, "cifar"),
    ("emnist", "cnn3", GRAY, "digits"),
])
def test_default_recipe_follows_the_table_by_dataset_model_and_channels(dataset, model, shape, expected):
    assert default_recipe(dataset, model, shape) == expected
    assert resolve(dataset, shape, model=model).recipe == expected


def test_a_recipe_changes_the_baseline_and_given_options_change_the_recipe():
    base = TrainConfig()
    cifar = resolve("cifar10", COLOUR)
    for field in settings_fields(recipe_only=True):
        assert getattr(cifar, field.name) == RECIPES["cifar"].get(field.name, getattr(base, field.name)), field.name
    assert resolve("cifar10", COLOUR, batch_size=32, val_split=0.0).batch_size == 32
    assert resolve("cifar10", COLOUR, recipe="baseline") == dataclasses.replace(base, dataset="cifar10",
                                                                                recipe="baseline")
    assert resolve("mnist", GRAY, recipe="digits", lr=None).lr == RECIPES["digits"]["lr"]  # None: not given
    assert resolve("mnist", GRAY, optimizer="sgd").lr == DEFAULT_LR["sgd"]  # the optimizer's own peak lr
    assert resolve("mnist", GRAY, optimizer="sgd", lr=0.1).lr == 0.1


def test_recipes_are_few_and_set_only_recipe_settings():
    names = {f.name for f in settings_fields(recipe_only=True)}
    assert len(RECIPES) <= 6 and RECIPES["baseline"] == {}
    for name, changes in RECIPES.items():
        assert set(changes) <= names, name
        resolve("cifar10", COLOUR, recipe=name)  # valid settings
    assert {row[-1] for row in DEFAULT_RECIPES} <= set(RECIPES)
    assert DEFAULT_RECIPES[-1][:3] == (None, None, None)  # every dataset gets a recipe


@pytest.mark.parametrize("given, message", [
    (dict(epochs=0), "epochs must be >= 1. Received: epochs=0"),
    (dict(lr=0.0), "lr must be in (0, 10]. Received: lr=0.0"),
    (dict(label_smoothing=1.0), "label_smoothing must be in [0, 1). Received: label_smoothing=1.0"),
    (dict(val_split=0.6), "val_split must be in [0, 0.5]. Received: val_split=0.6"),
    (dict(augment="flop"), "Unknown augment; valid: none, flip, crop_flip, flip_erase, shift, affine, flip_shift, "
                           "altflip_shift, flip_shift_cutout, flip_shift_mixup, flip_shift_cutmix, flip_shift_randaugment. "
                           "Received: augment='flop'"),
    (dict(whiten="yes"), "whiten must be True or False. Received: whiten='yes'"),
    (dict(batch_size=1.5), "batch_size must be a number. Received: batch_size=1.5"),
    (dict(device="gpu"), "device must be one of auto, cpu, cuda, cuda:N. Received: device='gpu'"),
    (dict(recipe="cifar_whiten"), "Unknown recipe; valid: baseline, digits, digits_small, fashion, cifar, airbench. "
                                  "Received: recipe='cifar_whiten'"),
    (dict(nesterov=True), "Unknown setting 'nesterov'"),
    (dict(momentum=1.0), "momentum must be in [0, 1). Received: momentum=1.0"),
    (dict(bn_bias_lr=0.0), "bn_bias_lr must be in (0, 1024]. Received: bn_bias_lr=0.0"),
    (dict(tta="mirror"), "Unknown tta; valid: none, flip, flip_shift. Received: tta='mirror'"),
])
def test_bad_settings_raise_one_value_error_naming_the_setting(given, message):
    with pytest.raises(ValueError) as err:
        resolve("mnist", GRAY, **given)
    assert str(err.value).startswith(message)


def test_a_config_from_an_older_kcnn_loads_with_the_values_it_trained_with(tmp_path):
    old = {"dataset": "mnist", "model": "cnn3", "epochs": 15, "recipe": "seed", "optimizer": "adam", "lr": 0.001,
           "lr_schedule": "constant", "weight_decay": 0.0, "augment": False, "batch_size": 64, "val_split": 0.1,
           "seed": 0, "device": "auto", "data_dir": None}  # before label smoothing, ema, whiten, mixed precision
    config = TrainConfig.from_record({"settings": old, "dataset": {"image_shape": list(GRAY)}})  # format 1
    assert (config.augment, config.label_smoothing, config.ema, config.whiten, config.mixed_precision) == (
        "none", 0.0, 0.0, False, None)
    assert config.identity() == resolve("mnist", GRAY, recipe="baseline").identity()
    colour = {"settings": dict(old, augment=True), "dataset": {"image_shape": list(COLOUR)}}
    assert TrainConfig.from_record(colour).augment == "crop_flip"  # the dataset's policy
    card = {"settings": dict(old, augment=True), "dataset": "cifar10", "input": {"shape": [None, *COLOUR]}}
    assert TrainConfig.from_record(card).augment == "crop_flip"  # a model card gives the shape as its input's
    with pytest.raises(ValueError, match=r"newer than this kcnn's 2; upgrade kcnn. Received: format_version=3"):
        TrainConfig.from_record({"settings": config.to_dict(), "format_version": 3})
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"settings": config.to_dict(), "dataset": {"image_shape": list(GRAY)}}))
    assert TrainConfig.load(path) == config
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"^{path}: not a kcnn run config"):
        TrainConfig.load(path)


RECORDS = sorted((REPO / "docs" / "runs").glob("*.json")) + sorted((REPO / "saved_models").glob("*.json"))


@pytest.mark.parametrize("record", RECORDS, ids=[p.stem for p in RECORDS])
def test_every_run_record_and_model_card_replays_with_its_own_settings(record):
    """``kcnn train --config RECORD`` and the record's command line train what the record trained,
    whatever recipe names came and went since; so do shipped model cards and their command."""
    saved = TrainConfig.load(record)
    assert resolve(base=saved).identity() == saved.identity()
    data = json.loads(record.read_text())
    commands = [saved.command()] + ([data["command"]] if "command" in data else [])
    for command in commands:
        shape = data["config"]["dataset"]["image_shape"] if "config" in data else data["input"]["shape"][1:]
        replayed = config_of_command(command, shape)
        assert replayed.identity() == saved.identity(), (command, saved.differences(replayed))


def test_the_recipes_command_lists_every_recipe_and_default_rule():
    result = run_cli("recipes")
    assert result.exit_code == 0
    first_words = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert set(RECIPES) <= set(first_words)
    assert sum(line.split()[-1] in RECIPES for line in result.output.splitlines()[-len(DEFAULT_RECIPES):]) == len(
        DEFAULT_RECIPES)
