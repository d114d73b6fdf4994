"""data stage: read a labelled dataset, split it, write train/dev/test JSONL plus the label set."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmopt.data.readers import Example, read_disk_splits, read_examples, read_rotten_tomatoes, read_texts
from llmopt.data.splits import check_splits, stratified_split, stratified_subsample
from llmopt.fsutil import atomic_write_json, atomic_write_jsonl
from llmopt.integrity import content_hash
from llmopt.stages.base import BuiltinModel, InputFile, ModelRef, StageConfig, StageContext, StageResult, Strict

SPLITS = ("train", "dev", "test")


class BuiltinSource(Strict):
    builtin: Literal["rotten_tomatoes"]


class FileSource(Strict):
    path: InputFile | None = Field(None, description="one file (split by the recipe) or a save_to_disk folder")
    train: InputFile | None = None
    dev: InputFile | None = None
    test: InputFile | None = None
    format: Literal["auto", "jsonl", "csv", "tsv", "parquet", "disk"] = "auto"
    unlabelled: InputFile | None = Field(None, description="unlabelled in-domain text (JSONL with the text column, "
                                         "or .txt, one text per line): the distill stage's extra transfer set")
    text_column: str = "text"
    label_column: str = "label"

    @model_validator(mode="after")
    def _one_layout(self) -> "FileSource":
        if (self.path is None) == (self.train is None):
            raise ValueError("give either `path:` (one file or folder) or `train:` (with optional dev:/test:)")
        if self.path is not None and (self.dev or self.test):
            raise ValueError("`dev:`/`test:` go with `train:`, not with `path:`")
        return self

    def files(self) -> list[str]:
        return [p for p in (self.path, self.train, self.dev, self.test, self.unlabelled) if p]


class SplitFractions(Strict):
    dev: float = Field(0.1, gt=0, lt=0.5)
    test: float = Field(0.1, gt=0, lt=0.5)


class DataConfig(StageConfig):
    """Load labelled text; stratified train/dev/test split with the recipe seed when the source has none."""

    type: Literal["data"] = "data"
    source: BuiltinSource | FileSource
    split: SplitFractions = SplitFractions()
    max_train_rows: int | None = Field(None, ge=2, description="stratified subsample of train (quick runs)")
    max_dev_rows: int | None = Field(None, ge=2)
    max_test_rows: int | None = Field(None, ge=2)
    rest_as_unlabelled: bool = Field(
        True, description="the train and dev rows that max_train_rows / max_dev_rows leave out are written, text only, "
        "to unlabelled.jsonl (the distill stage's transfer set); test rows never are")
    length_tokenizer: ModelRef | None = Field(
        BuiltinModel(builtin="minilm"),
        description="the token-length distribution of each split is measured with this model's tokenizer; null: skip")


def load_splits(cfg: DataConfig, seed: int) -> tuple[dict[str, list[Example]], str]:
    """Read the source and return train/dev/test examples and a name for messages."""
    splits, name, _ = load_splits_and_rest(cfg, seed)
    return splits, name


def load_splits_and_rest(cfg: DataConfig, seed: int) -> tuple[dict[str, list[Example]], str, list[Example]]:
    """load_splits plus, with rest_as_unlabelled, the train/dev rows the max_*_rows caps left out."""
    src = cfg.source
    if isinstance(src, BuiltinSource):
        given = {"train": read_rotten_tomatoes()}
        name = "builtin rotten_tomatoes"
    elif src.path is not None:
        p = Path(src.path)
        if p.is_dir() or src.format == "disk":
            given = read_disk_splits(p, src.text_column, src.label_column)
            given = {("dev" if k == "validation" else k): v for k, v in given.items()}
            unknown = set(given) - set(SPLITS)
            if unknown or "train" not in given:
                from llmopt.errors import DataError

                raise DataError(
                    f"{p}: splits {sorted(given)}; expected 'train' plus optional 'validation'/'dev' and 'test'."
                )
        else:
            given = {"train": read_examples(p, src.format, src.text_column, src.label_column)}
        name = str(p)
    else:
        given = {
            s: read_examples(Path(f), src.format, src.text_column, src.label_column)
            for s, f in (("train", src.train), ("dev", src.dev), ("test", src.test))
            if f
        }
        name = str(src.train)
    splits = dict(given)
    # carve missing held-out splits out of train, stratified, seeded
    if "test" not in splits:
        splits["train"], splits["test"] = stratified_split(splits["train"], cfg.split.test, seed)
    if "dev" not in splits:
        frac = cfg.split.dev / (1 - cfg.split.test) if "test" not in given else cfg.split.dev
        splits["train"], splits["dev"] = stratified_split(splits["train"], frac, seed + 1)
    rest: list[Example] = []
    for split, limit in (("train", cfg.max_train_rows), ("dev", cfg.max_dev_rows), ("test", cfg.max_test_rows)):
        if limit is not None:
            kept = stratified_subsample(splits[split], limit, seed + 2)
            if split != "test" and cfg.rest_as_unlabelled:
                ids = {id(ex) for ex in kept}
                rest += [ex for ex in splits[split] if id(ex) not in ids]
            splits[split] = kept
    return splits, name, rest


def run(cfg: DataConfig, ctx: StageContext) -> StageResult:
    """Read the source, split it (stratified, seeded) where it has no dev/test, and write train/dev/test.jsonl and
    labels.json to artifacts/."""
    from llmopt import faults

    faults.point("data.read")
    splits, name, rest = load_splits_and_rest(cfg, ctx.seed)
    unlabelled = [ex.text for ex in rest]
    labels = check_splits(splits, name)
    if isinstance(cfg.source, FileSource) and cfg.source.unlabelled:
        unlabelled += read_texts(Path(cfg.source.unlabelled), cfg.source.format, cfg.source.text_column)
    out = ctx.out_dir
    for split in SPLITS:
        atomic_write_jsonl(out / f"{split}.jsonl", [{"text": ex.text, "label": ex.label} for ex in splits[split]])
    if unlabelled:
        held_out = {ex.text for s in ("dev", "test") for ex in splits[s]}
        unlabelled = [t for t in dict.fromkeys(unlabelled) if t not in held_out]  # never a scored text as transfer
        atomic_write_jsonl(out / "unlabelled.jsonl", [{"text": t} for t in unlabelled])
    atomic_write_json(out / "labels.json", {"labels": labels})
    metrics = {
        "unlabelled_rows": len(unlabelled),
        "source": name,
        "labels": labels,
        "rows": {s: len(splits[s]) for s in SPLITS},
        "label_counts": {s: dict(sorted(Counter(ex.label for ex in splits[s]).items())) for s in SPLITS},
        "input_files": {p: content_hash(Path(p)) for p in cfg.inputs().files if Path(p).is_file()},
    }
    if cfg.length_tokenizer is not None:
        metrics["lengths"] = length_stats(splits, ctx.model_dir(cfg.length_tokenizer))
    return StageResult(metrics)


def length_stats(splits: dict[str, list[Example]], tokenizer_dir: Path) -> dict[str, Any]:
    """Tokens (with `tokenizer_dir`'s tokenizer, special tokens included) and words per text of every split:
    p50/p90/p95/p99/mean/max, and for tokens the share of texts over 64/128/256/512 — what max_length will cut."""
    import numpy as np

    from llmopt.models import display_path, load_tokenizer
    from llmopt.training.tokenize import length_distribution, token_lengths

    tok = load_tokenizer(tokenizer_dir)
    out: dict[str, Any] = {"tokenizer": display_path(tokenizer_dir)}
    for split in SPLITS:
        texts = [ex.text for ex in splits[split]]
        out[split] = {"tokens": length_distribution(token_lengths(tok, texts)),
                      "words": length_distribution(np.array([len(t.split()) for t in texts]), thresholds=())}
    return out


def section(sid: str, m: dict, doc: Any) -> None:
    """Source, labels and rows per split."""
    doc.h(2, f"Data ({sid})")
    doc.p(f"Source: {m['source']}. Labels: {', '.join(m['labels'])}.")
    doc.table(["split", "rows", *m["labels"]],
              [[s, str(n), *(str(m["label_counts"][s].get(lab, 0)) for lab in m["labels"])]
               for s, n in m["rows"].items()])
    if m.get("unlabelled_rows"):
        doc.p(f"Unlabelled text: {m['unlabelled_rows']:,} texts in unlabelled.jsonl (train/dev rows the max_*_rows "
              "caps left out, and the source's `unlabelled:` file; no dev/test text), for distillation's transfer "
              "set.")
