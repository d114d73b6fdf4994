"""Review items and the sources that find them in a run directory.

A source is anything with a `name` and `items(run) -> Iterable[ReviewItem]` (the `ItemSource` protocol). The
built-in ones read what the stages already write:

- `LabelErrorSource`: train rows whose given label out-of-fold probabilities contradict (confident learning,
  see `labelcheck.py`), ranked;
- `PredictionSource`: the evaluate stage's per-example predictions (artifacts/predictions/*.jsonl) that are
  wrong or least sure; label-scored causal models' generated answers become editable drafts;
- `AugmentedSource`: the augment stage's kept variants (op != 'original'), to accept or reject;
- `ReviewFileSource`: any finished stage's artifacts/review_items.jsonl — the plug-in point. The curate stage
  writes label conflicts there under `label_conflicts: review`; a later stage that generates free text writes
  rows `{"kind": "draft", "prompt": ..., "text": <draft>}` there and they show up as editable drafts.

Item ids are stable across restarts (stage id, kind, file, row), so stored decisions keep pointing at them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmopt.fsutil import read_json, read_jsonl

MAX_WRONG = 500  # per predictions file: confidently wrong first
MAX_UNSURE = 50  # per predictions file: correct but least sure
MAX_LABEL_ERRORS = 2000


@dataclass
class ReviewItem:
    """One thing a person looks at. `stage`/`split`/`row` point at the row it came from (split 'train' rows are
    what an export changes); `context` holds what else helps decide (original text, probabilities, members)."""

    id: str
    kind: str  # label_error | prediction | draft | label_conflict | augmented | any kind a review_items.jsonl names
    text: str
    stage: str
    source: str  # the file it was read from, relative to the run directory
    row: int
    split: str | None = None
    given_label: str | None = None
    model_label: str | None = None
    confidence: float | None = None
    score: float = 0.0  # review order: higher first
    prompt: str | None = None  # drafts: what the text answers
    context: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return asdict(self)


class ItemSource(Protocol):
    name: str

    def items(self, run: "RunView") -> Iterable[ReviewItem]: ...


@dataclass(frozen=True)
class StageInfo:
    id: str
    type: str
    dir: Path
    config: dict[str, Any]

    @property
    def artifacts(self) -> Path:
        return self.dir / "artifacts"


class RunView:
    """The finished stages of a run directory, read once."""

    def __init__(self, run_dir: Path, train_stage: str | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.stages: list[StageInfo] = []
        root = self.run_dir / "stages"
        if root.is_dir():
            for sdir in sorted(root.iterdir()):
                conf_path = sdir / "config.json"
                if (sdir / "DONE").is_file() and conf_path.is_file():
                    conf = read_json(conf_path)  # {"id", "type", "config": the stage's resolved config, ...}
                    self.stages.append(StageInfo(conf["id"], conf["type"], sdir, conf.get("config") or {}))
        self.train_stage = self._pick_train_stage(train_stage)

    def stage(self, sid: str) -> StageInfo | None:
        return next((s for s in self.stages if s.id == sid), None)

    def _pick_train_stage(self, wanted: str | None) -> StageInfo | None:
        """The data the model trained on: the given stage, else the `data:` of the last finetune stage, else the
        last stage with a train split."""
        from llmopt.errors import RunDirError

        with_train = [s for s in self.stages if (s.artifacts / "train.jsonl").is_file()
                      and (s.artifacts / "labels.json").is_file()]
        if wanted is not None:
            found = next((s for s in with_train if s.id == wanted), None)
            if found is None:
                raise RunDirError(f"{self.run_dir}: no finished stage '{wanted}' with a train split "
                                  f"(stages with one: {', '.join(s.id for s in with_train) or 'none'}).")
            return found
        for s in reversed(self.stages):
            if s.type == "finetune" and isinstance(s.config.get("data"), str):
                found = next((w for w in with_train if w.id == s.config["data"]), None)
                if found is not None:
                    return found
        return with_train[-1] if with_train else None

    def labels(self) -> list[str]:
        """The label set (from the train stage, else the first stage that has labels.json)."""
        order = ([self.train_stage] if self.train_stage else []) + self.stages
        for s in order:
            p = s.artifacts / "labels.json"
            if p.is_file():
                return list(read_json(p)["labels"])
        return []

    def rel(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.run_dir).as_posix()


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)


def _conf(row: dict) -> float | None:
    c = row.get("confidence")
    return float(c) if isinstance(c, (int, float)) else None


class PredictionSource:
    """Test/dev rows that an evaluate stage's primary model (its reference, else its first model) got wrong or was
    least sure of — one item per row, every classifier's prediction beside it; causal answers as drafts."""

    name = "predictions"

    def items(self, run: RunView) -> Iterator[ReviewItem]:
        for s in run.stages:
            folder = s.artifacts / "predictions"
            if s.type != "evaluate" or not folder.is_dir():
                continue
            split = s.config.get("split", "test")
            metrics = read_json(s.dir / "metrics.json") if (s.dir / "metrics.json").is_file() else {}
            kinds = {n: e.get("kind") for n, e in (metrics.get("models") or {}).items()}
            files: dict[str, tuple[Path, list[dict]]] = {}
            for f in sorted(folder.glob("*.jsonl")):
                rows = read_jsonl(f)
                if any("answer" in r for r in rows):
                    yield from self._drafts(run, s, f, rows, split)
                else:
                    files[f.stem] = (f, rows)
            if not files:
                continue
            models = [n for n in files if kinds.get(n) != "baseline"] or list(files)
            primary = metrics.get("reference") if metrics.get("reference") in files else models[0]
            f, rows = files[primary]
            wrong = [i for i, r in enumerate(rows) if r.get("pred") != r.get("label")]
            wrong.sort(key=lambda i: -(_conf(rows[i]) or 0))
            right = [i for i, r in enumerate(rows) if r.get("pred") == r.get("label")]
            right.sort(key=lambda i: c if (c := _conf(rows[i])) is not None else 1.0)
            for group, picked in (("wrong", wrong[:MAX_WRONG]), ("unsure", right[:MAX_UNSURE])):
                for i in picked:
                    r, c = rows[i], _conf(rows[i])
                    others = {n: {"pred": rs[i].get("pred"), "confidence": _conf(rs[i])}
                              for n, (_, rs) in files.items() if i < len(rs) and rs[i].get("text") == r.get("text")}
                    n_wrong = sum(1 for o in others.values() if o["pred"] != r.get("label"))
                    yield ReviewItem(
                        id=f"{_safe(s.id)}.pred.{i}", kind="prediction", text=str(r["text"]), stage=s.id,
                        source=run.rel(f), row=i, split=split, given_label=r.get("label"), model_label=r.get("pred"),
                        confidence=c, score=(1 + (c or 0) + n_wrong / len(others)) if group == "wrong"
                        else (1 - (c if c is not None else 1)),
                        context={"model": primary, "why": group, "models_wrong": f"{n_wrong} of {len(others)}",
                                 "predictions": others, **({"probs": r["probs"]} if "probs" in r else {})})

    def _drafts(self, run: RunView, s: StageInfo, f: Path, rows: list[dict], split: str) -> Iterator[ReviewItem]:
        """A label-scored causal model's generated answers: the wrong or unparseable ones, to be corrected."""
        for i, r in enumerate(rows):
            if r.get("answer") is None or r.get("pred") == r.get("label"):
                continue
            yield ReviewItem(
                id=f"{_safe(s.id)}.draft.{_safe(f.stem)}.{i}", kind="draft", text=str(r["answer"]), stage=s.id,
                source=run.rel(f), row=i, split=split, given_label=r.get("label"), model_label=r.get("pred"),
                score=1.0 if r.get("pred") is None else 0.9, prompt=str(r["text"]),
                context={"model": f.stem, "why": "unparseable answer" if r.get("pred") is None else "wrong answer"})


class AugmentedSource:
    """The augment stage's kept variants, each with the row it came from."""

    name = "augmented"

    def items(self, run: RunView) -> Iterator[ReviewItem]:
        for s in run.stages:
            f = s.artifacts / "train.jsonl"
            if s.type != "augment" or not f.is_file():
                continue
            rows = read_jsonl(f)
            originals = {r["source_id"]: r["text"] for r in rows if r.get("op") == "original"}
            for i, r in enumerate(rows):
                if r.get("op", "original") == "original":
                    continue
                yield ReviewItem(
                    id=f"{_safe(s.id)}.aug.{i}", kind="augmented", text=str(r["text"]), stage=s.id,
                    source=run.rel(f), row=i, split="train", given_label=r.get("label"), score=0.5,
                    context={"op": r.get("op"), "source_id": r.get("source_id"),
                             "original": originals.get(r.get("source_id"))})


class ReviewFileSource:
    """Rows of any finished stage's artifacts/review_items.jsonl: `kind` and `text` required; `label` (or the
    first of `members`) is the given label; `pred`, `confidence`, `prompt`, `score` optional; the rest is
    shown as context. A row whose `id` matches a row of the stage's train.jsonl points at that row."""

    name = "review_items"
    FILE = "review_items.jsonl"

    def items(self, run: RunView) -> Iterator[ReviewItem]:
        for s in run.stages:
            f = s.artifacts / self.FILE
            if not f.is_file():
                continue
            train_rows: dict[Any, int] = {}
            if (s.artifacts / "train.jsonl").is_file():
                train_rows = {r["id"]: i for i, r in enumerate(read_jsonl(s.artifacts / "train.jsonl")) if "id" in r}
            for i, r in enumerate(read_jsonl(f)):
                kind, text = r.get("kind"), r.get("text")
                if not isinstance(kind, str) or not isinstance(text, str):
                    from llmopt.errors import DataError

                    raise DataError(f"{f}: row {i + 1} needs string `kind` and `text` fields (found: "
                                    f"{', '.join(r) or 'none'}).")
                given = r.get("label")
                if given is None and r.get("members"):
                    given = r["members"][0].get("label")
                in_train = r.get("id") in train_rows
                known = {"kind", "text", "label", "pred", "confidence", "prompt", "score"}
                yield ReviewItem(
                    id=f"{_safe(s.id)}.{_safe(kind)}.{i}", kind=kind, text=text, stage=s.id, source=run.rel(f),
                    row=train_rows[r["id"]] if in_train else i, split="train" if in_train else None,
                    given_label=given, model_label=r.get("pred"), confidence=_conf(r),
                    score=float(r.get("score", 0.8)), prompt=r.get("prompt"),
                    context={k: v for k, v in r.items() if k not in known})


class LabelErrorSource:
    """Train rows of the run's train stage that confident learning flags, most doubtful first (with
    flagged_only=False: every row in that order, as the benchmark reviews the top N%)."""

    name = "label_errors"

    def __init__(self, method: str = "tfidf", folds: int = 5, seed: int = 0, flagged_only: bool = True,
                 limit: int | None = MAX_LABEL_ERRORS) -> None:
        self.method, self.folds, self.seed = method, folds, seed
        self.flagged_only, self.limit = flagged_only, limit

    def items(self, run: RunView) -> Iterator[ReviewItem]:
        from llmopt.review.labelcheck import check_stage

        if run.train_stage is None or self.method == "none":
            return
        s = run.train_stage
        found = check_stage(run, s, self.method, self.folds, self.seed)
        rows = read_jsonl(s.artifacts / "train.jsonl")
        ranked = [r for r in found["ranked"] if r[4] or not self.flagged_only]
        for rank, (i, quality, pred, conf, flagged) in enumerate(ranked[:self.limit]):
            r = rows[i]
            yield ReviewItem(
                id=f"{_safe(s.id)}.train.{i}", kind="label_error", text=str(r["text"]), stage=s.id,
                source=run.rel(s.artifacts / "train.jsonl"), row=i, split="train", given_label=str(r["label"]),
                model_label=pred, confidence=conf, score=2.0 - quality,
                context={"rank": rank + 1, "label_quality": quality, "flagged": flagged, "method": found["method"]})


def default_sources(method: str = "tfidf", folds: int = 5, seed: int = 0) -> list[ItemSource]:
    return [LabelErrorSource(method, folds, seed), PredictionSource(), ReviewFileSource(), AugmentedSource()]


def collect(run: RunView, sources: Iterable[ItemSource]) -> list[ReviewItem]:
    """All items of all sources, by kind then score (highest first); ids must be unique."""
    items: dict[str, ReviewItem] = {}
    for src in sources:
        for it in src.items(run):
            items.setdefault(it.id, it)
    kinds = ["label_error", "prediction", "label_conflict", "augmented", "draft"]
    return sorted(items.values(), key=lambda it: (kinds.index(it.kind) if it.kind in kinds else len(kinds),
                                                  -it.score, it.id))
