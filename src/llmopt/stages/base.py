"""What every stage shares: a typed config whose inputs are declared by type, a context, a result.

A stage's inputs are config fields typed `StageRef` (an earlier stage), `ModelRef` (an earlier stage's
model, a folder, or `{builtin: name}`) or `InputFile` (a file or folder the user gives). The pipeline finds
them by type (`declared_inputs`) to order the stages, validate the recipe, fingerprint each stage with the
sha256 of its input files, and resume: a stage cannot forget to declare an input.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Base for every typed config: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Input:
    """Marks a config field as an input of the stage: kind 'stage', 'model' or 'file'."""

    kind: Literal["stage", "model", "file"]


class BuiltinModel(Strict):
    builtin: Literal["minilm", "smollm2-135m"]


StageRef = Annotated[str, Input("stage")]
ModelRef = Annotated[BuiltinModel | str, Input("model")]
InputFile = Annotated[str, Input("file")]


def model_ref_str(ref: BuiltinModel | str) -> str:
    """The string form of a model reference: a stage id, a folder, or 'builtin:<name>'."""
    return f"builtin:{ref.builtin}" if isinstance(ref, BuiltinModel) else ref


@dataclass
class Inputs:
    stages: list[str] = field(default_factory=list)  # earlier stage ids read through a StageRef
    models: list[str] = field(default_factory=list)  # model refs: stage ids, folders, builtin:<name>
    files: list[str] = field(default_factory=list)   # user files and folders (sha256 in the fingerprint)
    where: dict[str, str] = field(default_factory=dict)  # ref -> key path, e.g. "teacher", "source.train"

    def stage_ids(self, known: typing.Iterable[str]) -> list[str]:
        """Every earlier stage this stage depends on (data and model references that are stage ids)."""
        known = set(known)
        return list(dict.fromkeys([*self.stages, *(m for m in self.models if m in known)]))


def _marker(annotation: Any) -> Input | None:
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, Input):
            return meta
    for arg in typing.get_args(annotation):
        found = _marker(arg)
        if found:
            return found
    return None


def declared_inputs(cfg: BaseModel) -> Inputs:
    """Walk the config (nested blocks and lists included) and collect every value of an input type."""
    out = Inputs()

    def add(kind: str, value: Any, path: str) -> None:
        if value is None:
            return
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                add(kind, v, f"{path}[{i}]")
            return
        s = model_ref_str(value) if kind == "model" else str(value)
        {"stage": out.stages, "model": out.models, "file": out.files}[kind].append(s)
        out.where.setdefault(s, path)

    def walk(obj: BaseModel, prefix: str) -> None:
        for name, info in type(obj).model_fields.items():
            value = getattr(obj, name)
            marker = next((m for m in info.metadata if isinstance(m, Input)), None) or _marker(info.annotation)
            path = f"{prefix}{name}"
            if marker is not None:
                add(marker.kind, value, path)
            elif isinstance(value, BaseModel):
                walk(value, path + ".")
            elif isinstance(value, (list, tuple)):
                for i, v in enumerate(value):
                    if isinstance(v, BaseModel):
                        walk(v, f"{path}[{i}].")

    walk(cfg, "")
    out.stages = list(dict.fromkeys(out.stages))
    out.models = list(dict.fromkeys(out.models))
    out.files = list(dict.fromkeys(out.files))
    return out


class StageConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="unique stage id")
    type: str

    @model_validator(mode="before")
    @classmethod
    def _merge_block_defaults(cls, raw: Any) -> Any:
        """A partly given block (`train: {epochs: 1}`) keeps this stage's own defaults for the other fields."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        for name, info in cls.model_fields.items():
            default = info.default
            if isinstance(raw.get(name), dict) and isinstance(default, BaseModel):
                raw[name] = {**default.model_dump(exclude_unset=True), **raw[name]}
        return raw

    def inputs(self) -> Inputs:
        return declared_inputs(self)


@dataclass
class StageContext:
    """Where a stage runs: its own folder plus read access to earlier stages' folders."""

    run_dir: Path
    stage_dir: Path
    seed: int
    threads: int
    stage_dirs: dict[str, Path] = field(default_factory=dict)
    allow_pickle: bool = False  # --allow-pickle: load *.bin/*.pt with torch.load(weights_only=True)

    @property
    def out_dir(self) -> Path:
        return self.stage_dir / "artifacts"

    def artifacts_of(self, stage_id: str) -> Path:
        return self.stage_dirs[stage_id] / "artifacts"

    def model_dir(self, ref: BuiltinModel | str) -> Path:
        """The checked model folder a model ref (earlier stage id, folder or builtin) names; pickle per --allow-pickle."""
        from llmopt.models import check_model_dir, resolve_model_ref

        return check_model_dir(resolve_model_ref(model_ref_str(ref), self.stage_dirs), allow_pickle=self.allow_pickle)


@dataclass
class StageResult:
    metrics: dict[str, Any]
