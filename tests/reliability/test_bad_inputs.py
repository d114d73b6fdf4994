"""Bad input of every kind ends in one clear error (file, place, culprit), exit 2, nothing left behind;
a change that leaves a legal input (a BOM, a 1 MB row) loads every row.

Every structured mutation once (per data format), in this process; bench/bad_inputs.py runs >= 100
per category. Cases come from llmopt.testing.bad_data / bad_recipes.
"""

import dataclasses
from pathlib import Path

import pytest

from llmopt.errors import LlmoptError
from llmopt.testing.bad_data import DATA_MUTATIONS, FORMATS, data_cases
from llmopt.testing.bad_inputs import model_cases, run_case
from llmopt.testing.bad_recipes import RECIPE_MUTATIONS, recipe_cases

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))

KINDS = [(fmt, k) for fmt in FORMATS for k, (fmts, _) in DATA_MUTATIONS.items() if fmt in fmts]
KINDS += [("recipe", k) for k in RECIPE_MUTATIONS]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    return root, {(c.category, c.kind): c for c in data_cases(root / "data") + recipe_cases(RECIPES, root)}


@pytest.mark.parametrize("category, kind", KINDS)
def test_one_clear_error_or_every_row_loads(cases, category, kind):
    root, found = cases
    case = found[category, kind]
    outcome, why = run_case(case, root / "runs" / f"{category}-{kind}")
    assert outcome == ("accepted_valid" if case.rows is not None else "clear_error"), why


def test_generators_cover_every_kind_and_scale(tmp_path):
    assert {(c.category, c.kind) for c in data_cases(tmp_path / "a") + recipe_cases(RECIPES, tmp_path)} == set(KINDS)
    big = data_cases(tmp_path / "b", per_format=30, seed=1)
    assert [sum(c.category == f for c in big) for f in FORMATS] == [30] * 4
    assert {c.kind for c in big if c.category == "jsonl"} == {k for f, k in KINDS if f == "jsonl"}


@pytest.mark.parametrize("category, kind", [("csv", "stray_quote"), ("recipe", "unknown_ref")])
def test_a_real_process_prints_one_line_and_leaves_no_run(cases, category, kind):
    root, found = cases
    case = dataclasses.replace(found[category, kind], command="run")  # recipes too: no run directory may appear
    outcome, why = run_case(case, root / "process" / kind, subprocess_run=True)
    assert outcome == "clear_error", why


def test_bad_model_folders(tmp_path, tiny_bert):
    for case in model_cases(tmp_path / "model", tiny_bert):
        outcome, why = run_case(case, tmp_path / "runs" / case.kind)
        assert outcome == "clear_error", why


def test_all_user_errors_share_one_base_class():
    from llmopt import errors

    for name in ("RecipeError", "DataError", "ModelError", "RunDirError"):
        assert issubclass(getattr(errors, name), LlmoptError)
