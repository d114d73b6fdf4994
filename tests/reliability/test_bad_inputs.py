"""Bad input of every kind ends in one clear error (what, where, what to do), exit 2, nothing left behind."""

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmopt.cli import main
from llmopt.data.readers import read_examples
from llmopt.errors import DataError, LlmoptError, RecipeError
from llmopt.recipe import parse_recipe

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(st.text(max_size=400))
def test_recipe_loader_on_random_text(text):
    try:
        parse_recipe(text, source="r.yaml", check_paths=False)
    except RecipeError as e:
        assert str(e).startswith("r.yaml")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
stage_like = st.fixed_dictionaries(
    {"id": st.sampled_from(["data", "ft", "ev", "", "1x"]),
     "type": st.sampled_from(["data", "finetune", "evaluate", "report", "nope"])},
    optional={"data": json_values, "models": json_values, "source": json_values, "epochs": json_values,
              "model": json_values, "learning_rate": json_values},
)


@FAST
@given(st.fixed_dictionaries({"version": json_values, "name": json_values,
                              "stages": st.lists(stage_like, max_size=4) | json_values}))
def test_recipe_loader_on_random_structures(obj):
    try:
        parse_recipe(yaml.safe_dump(obj), source="r.yaml", check_paths=False)
    except RecipeError as e:
        assert str(e).startswith("r.yaml")


@FAST
@given(st.binary(max_size=300), st.sampled_from(["jsonl", "csv", "tsv", "parquet"]))
def test_readers_on_random_bytes(tmp_path, blob, fmt):
    p = tmp_path / f"d.{fmt}"
    p.write_bytes(blob)
    try:
        rows = read_examples(p, "auto", "text", "label")
    except DataError as e:
        assert str(p) in str(e)
    else:
        assert all(r.text.strip() and r.label for r in rows)


@FAST
@given(st.lists(st.dictionaries(st.sampled_from(["text", "label", "extra"]), json_values, max_size=3), max_size=6))
def test_jsonl_reader_on_random_records(tmp_path, records):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    try:
        rows = read_examples(p, "jsonl", "text", "label")
    except DataError as e:
        assert str(p) in str(e)
    else:
        assert len(rows) == len(records)


# --- named cases, through the CLI: exit 2, one message, no traceback, no run directory left ---


def test_every_named_bad_input_gets_one_clear_error(tmp_path, tiny_bert, capsys):
    from llmopt.testing.bad_inputs import named_cases

    cases = named_cases(tmp_path, tiny_bert)
    assert len(cases) == 17
    for name, (_, recipe, expected) in cases.items():
        runs = tmp_path / f"runs-{name.replace(' ', '_')}"
        rc = main(["run", str(recipe), "--runs-dir", str(runs)])
        err = capsys.readouterr().err
        assert rc == 2, f"{name}: exit {rc}\n{err}"
        assert expected in err, f"{name}: {err}"
        errors = [line for line in err.splitlines() if not line.startswith("[llmopt] ")]  # progress lines aside
        assert len(errors) == 1 and errors[0].startswith("llmopt: error: "), f"{name}: not one error line: {err}"
        assert "Traceback" not in err
        assert not runs.exists() or not any(runs.rglob("*")), f"{name}: left {list(runs.rglob('*'))}"


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def _recipe(tmp_path: Path, source: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(f"version: 1\nname: bad\nstages:\n  - {{id: data, type: data, source: {source}}}\n")
    return p


def test_no_traceback_through_a_real_process(tmp_path):
    import subprocess
    import sys

    p = _write(tmp_path, "x.jsonl", b'{"text": "\xff\xfe", "label": "a"}\n')
    recipe = _recipe(tmp_path, f"{{path: {p}}}")
    out = subprocess.run([sys.executable, "-m", "llmopt.cli", "run", str(recipe), "--runs-dir", str(tmp_path / "runs")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and f"{p}:1: not valid UTF-8" in out.stderr
    assert not (tmp_path / "runs" / "bad").exists() or not any((tmp_path / "runs" / "bad").iterdir())


def test_all_user_errors_share_one_base_class():
    from llmopt import errors

    for name in ("RecipeError", "DataError", "ModelError", "RunDirError"):
        assert issubclass(getattr(errors, name), LlmoptError)
