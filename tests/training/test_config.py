"""A training stage's `train:` block takes max_length / truncation from the parent model unless the recipe sets them."""

from __future__ import annotations

from llmopt.training.config import TrainConfig, with_model_settings

PARENT = {"max_length": 256, "truncation": "head_tail"}


def test_unset_fields_come_from_the_parent_model_set_ones_stay():
    from llmopt.stages.distill import DistillConfig
    from llmopt.stages.prune import PruneConfig

    plain = DistillConfig(id="d", teacher="ft", layers=[0], train={"epochs": 1})
    got = with_model_settings(plain.train, PARENT)
    assert (got.max_length, got.truncation, got.epochs, got.learning_rate) == (256, "head_tail", 1, 1e-4)
    pinned = DistillConfig(id="d", teacher="ft", layers=[0], train={"max_length": 64})
    assert (with_model_settings(pinned.train, PARENT).max_length,
            with_model_settings(pinned.train, PARENT).truncation) == (64, "head_tail")
    default = PruneConfig(id="p", model="ft", keep_layers=1)  # no train: block at all
    assert with_model_settings(default.train, PARENT).max_length == 256
    assert with_model_settings(default.train, {}) == default.train  # a parent without the file: defaults
    assert with_model_settings(TrainConfig(), PARENT).truncation == "head_tail"


def test_a_recipe_that_sets_max_length_keeps_it(tmp_path):
    from llmopt.recipe import parse_recipe

    text = """
version: 1
name: t
stages:
  - {id: data, type: data, source: {builtin: rotten_tomatoes}}
  - {id: ft, type: finetune, train: {max_length: auto}}
  - {id: s1, type: search, teacher: ft, train: {epochs: 1}}
  - {id: s2, type: search, teacher: ft, train: {max_length: 128}}
"""
    recipe = parse_recipe(text, check_paths=False)
    assert with_model_settings(recipe.stage("s1").train, PARENT).max_length == 256
    assert with_model_settings(recipe.stage("s2").train, PARENT).max_length == 128  # 128 given, though the default
    over = parse_recipe(text, overrides=["stages.s1.train.truncation=right"], check_paths=False)
    assert with_model_settings(over.stage("s1").train, PARENT).truncation == "right"
