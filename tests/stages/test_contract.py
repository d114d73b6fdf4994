"""The stage contract: inputs are found by type (nothing to forget), modules stay apart, every stage is complete."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Literal

from pydantic import Field

from llmopt.stages import STAGES
from llmopt.stages.base import BuiltinModel, InputFile, ModelRef, StageConfig, StageRef, Strict, declared_inputs

SRC = Path(__file__).resolve().parents[2] / "src" / "llmopt"


class _Nested(Strict):
    files: list[InputFile] = []
    helper: ModelRef | None = None


class _Toy(StageConfig):
    type: Literal["toy"] = "toy"
    data: StageRef = "data"
    teacher: ModelRef = Field(description="a model")
    models: list[ModelRef] = []
    base: ModelRef = BuiltinModel(builtin="minilm")
    block: _Nested = _Nested()
    note: str = "not an input"


def test_inputs_are_found_by_type_in_nested_blocks_lists_and_optionals():
    cfg = _Toy(id="t", teacher="ft", models=["a", "/m/b"], block={"files": ["x.txt"], "helper": "h"})
    got = declared_inputs(cfg)
    assert got.stages == ["data"]
    assert got.models == ["ft", "a", "/m/b", "builtin:minilm", "h"]
    assert got.files == ["x.txt"]
    assert got.where["h"] == "block.helper" and got.where["/m/b"] == "models[1]" and got.where["x.txt"] == "block.files[0]"
    assert got.stage_ids({"data", "ft", "a"}) == ["data", "ft", "a"]
    assert "not an input" not in got.models + got.files


def test_every_stage_declares_its_model_and_data_fields_by_type():
    """A field named like an input (model, teacher, data, models, ...) must carry an input type."""
    for name, spec in STAGES.items():
        for field, info in spec.config.model_fields.items():
            if field in ("data", "model", "teacher", "models", "reference", "student_model", "extra_texts"):
                cfg_inputs = repr(info.metadata) + repr(info.annotation)
                assert "Input(kind=" in cfg_inputs, f"{name}.{field} is not typed StageRef/ModelRef/InputFile"


def test_every_stage_has_a_config_a_run_and_a_report_section_with_docstrings():
    for name, spec in STAGES.items():
        assert spec.config.model_fields["type"].default == name
        assert spec.run.__doc__ and spec.section.__doc__, name


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_stage_module_imports_another_and_training_does_not_import_eval():
    stage_mods = {f"llmopt.stages.{p.stem}" for p in (SRC / "stages").glob("*.py") if p.stem not in ("__init__", "base")}
    for p in (SRC / "stages").glob("*.py"):
        if p.stem == "__init__":
            continue
        bad = {m for m in _imports(p) if m in stage_mods and m != f"llmopt.stages.{p.stem}"}
        assert not bad, f"{p.name} imports {bad}"
    for p in (SRC / "training").glob("*.py"):
        assert not any(m.startswith("llmopt.eval") for m in _imports(p)), p.name
    for p in (SRC / "stages").glob("*.py"):  # nothing reaches back into the pipeline (no import circle)
        assert "llmopt.pipeline" not in _imports(p), p.name


def test_model_folder_content_is_in_the_fingerprint(tmp_path, tiny_bert):
    import shutil

    from llmopt.pipeline import input_hashes

    folder = tmp_path / "m"
    shutil.copytree(tiny_bert, folder)
    cfg = _Toy(id="t", teacher=str(folder))
    before = input_hashes(cfg.inputs(), {"data"})
    (folder / "config.json").write_text((folder / "config.json").read_text().replace("}", ', "x": 1}', 1))
    after = input_hashes(cfg.inputs(), {"data"})
    assert set(before) == {str(folder), "builtin:minilm"} and before[str(folder)] != after[str(folder)]
    assert before["builtin:minilm"] == after["builtin:minilm"]
