"""Read the data stage's artifact folder (train/dev/test JSONL + labels.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmopt.fsutil import read_json, read_jsonl


@dataclass
class LabelledData:
    labels: list[str]
    train: list[dict]
    dev: list[dict]
    test: list[dict]
    unlabelled: list[str] = field(default_factory=list)  # unlabelled.jsonl: rows the caps left out, or the
    # source's `unlabelled:` file

    def split(self, name: str) -> list[dict]:
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]

    def texts(self, name: str) -> list[str]:
        return [r["text"] for r in self.split(name)]

    def ids(self, rows: list[dict]) -> list[int]:
        index = {lab: i for i, lab in enumerate(self.labels)}
        return [index[r["label"]] for r in rows]


def load_data_artifact(folder: Path) -> LabelledData:
    folder = Path(folder)
    return LabelledData(
        labels=read_json(folder / "labels.json")["labels"],
        train=read_jsonl(folder / "train.jsonl"),
        dev=read_jsonl(folder / "dev.jsonl"),
        test=read_jsonl(folder / "test.jsonl"),
        unlabelled=[r["text"] for r in read_jsonl(extra)] if (extra := folder / "unlabelled.jsonl").exists() else [],
    )
