"""What every stage shares: a typed config, a context to run in, a result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base for every typed config: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StageConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="unique stage id")
    type: str

    def refs(self) -> list[str]:
        """Ids of earlier stages this stage reads from (for ordering and resume): its `data` stage, if it has one.

        Models are named in model_refs(), since a model may be a stage id or a folder."""
        data = getattr(self, "data", None)
        return [data] if data else []

    def model_refs(self) -> list[str]:
        """Strings that name a model: an earlier stage id or a folder path."""
        return []


@dataclass
class StageContext:
    """Where a stage runs: its own folder plus read access to earlier stages' folders."""

    run_dir: Path
    stage_dir: Path
    seed: int
    threads: int
    stage_dirs: dict[str, Path] = field(default_factory=dict)
    stage_types: dict[str, str] = field(default_factory=dict)
    allow_pickle: bool = False  # --allow-pickle: load *.bin/*.pt with torch.load(weights_only=True)

    @property
    def out_dir(self) -> Path:
        return self.stage_dir / "artifacts"

    def artifacts_of(self, stage_id: str) -> Path:
        return self.stage_dirs[stage_id] / "artifacts"

    def model_dir(self, ref: str) -> Path:
        """The checked model folder a model ref (earlier stage id, folder or builtin:) names; pickle per --allow-pickle."""
        from llmopt.models import check_model_dir, resolve_model_ref

        return check_model_dir(resolve_model_ref(ref, self.stage_dirs), allow_pickle=self.allow_pickle)


@dataclass
class StageResult:
    metrics: dict[str, Any]
