"""evaluate stage: every model beside majority and TF-IDF baselines — quality with intervals, speed, size."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llmopt.stages.base import StageConfig, StageContext, StageResult


class EvaluateConfig(StageConfig):
    """Score models (earlier stage ids or model folders) and baselines on one split of the data stage."""

    type: Literal["evaluate"] = "evaluate"
    data: str = Field("data", description="id of the data stage")
    models: list[str] = Field(min_length=1, description="earlier stage ids or model folders")
    reference: str | None = Field(None, description="model the others are tested against (default: first)")
    split: Literal["test", "dev"] = "test"
    baselines: list[Literal["majority", "tfidf"]] = ["majority", "tfidf"]
    bootstrap_resamples: int = Field(1000, ge=1000)
    max_length: int = Field(128, ge=8)
    batch_size: int = Field(64, ge=1)
    threads: int | None = Field(None, ge=1, description="threads for timing (default: the run's)")
    warmup: int = Field(10, ge=1)
    latency_runs: int = Field(200, ge=10)
    throughput_batches: int = Field(10, ge=1)

    def model_refs(self) -> list[str]:
        return list(self.models)


def _entry_name(ref: str) -> str:
    return Path(ref).name if ("/" in ref or ref.startswith(".")) else ref


def run(cfg: EvaluateConfig, ctx: StageContext) -> StageResult:
    import numpy as np

    from llmopt.compression.gate import annotate_gates
    from llmopt.compression.onnx_export import check_onnx_dir, is_onnx_dir
    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval.baselines import MajorityBaseline, TfidfBaseline
    from llmopt.eval.metrics import classification_report, paired_bootstrap
    from llmopt.eval.predictors import load_predictor, predict_all
    from llmopt.eval.speed import PeakRSS, measure_speed
    from llmopt.fsutil import atomic_write_jsonl, dir_size_bytes
    from llmopt.models import check_model_dir, resolve_model_ref, weights_size_bytes

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    rows = data.split(cfg.split)
    texts = [r["text"] for r in rows]
    y = np.array(data.ids(rows))
    k = len(data.labels)
    threads = cfg.threads or ctx.threads
    train_texts, train_y = [r["text"] for r in data.train], data.ids(data.train)

    entries: dict[str, dict[str, Any]] = {}
    preds: dict[str, np.ndarray] = {}

    def score(name: str, kind: str, build, size_path: Path | None, weights_path: Path | None) -> None:
        with PeakRSS() as mem:  # loading + inference over the whole split
            predictor = build()
            probs = predict_all(predictor, texts, cfg.batch_size)
        # timed with the memory sampler stopped: its wake-ups would steal a core from the timed threads
        speed = measure_speed(
            predictor.predict_proba, texts=texts, threads=threads, warmup=cfg.warmup, latency_runs=cfg.latency_runs,
            throughput_batches=cfg.throughput_batches,
        )
        pred = probs.argmax(axis=1)
        preds[name] = pred
        rep = classification_report(y, pred, data.labels, cfg.bootstrap_resamples, ctx.seed)
        entries[name] = {
            "kind": kind,
            "runtime": predictor.runtime,
            **rep,
            **speed,
            "params": int(predictor.params),
            "size_bytes": dir_size_bytes(size_path) if size_path else None,
            "weights_bytes": weights_size_bytes(weights_path) if weights_path else None,
            "peak_rss_mb": mem.peak / 2**20,
            "peak_rss_delta_mb": mem.peak_delta / 2**20,
        }
        atomic_write_jsonl(
            ctx.out_dir / "predictions" / f"{name}.jsonl",
            (
                {"text": t, "label": r["label"], "pred": data.labels[int(p)], "confidence": float(pr.max()),
                 "probs": {lab: float(v) for lab, v in zip(data.labels, pr)}}
                for t, r, p, pr in zip(texts, rows, pred, probs)
            ),
        )

    base_dir = ctx.out_dir / "baselines"
    if "majority" in cfg.baselines:
        maj = MajorityBaseline(train_y, k)
        maj.save(base_dir / "majority.json")
        score("majority", "baseline", lambda: maj, base_dir / "majority.json", None)
    if "tfidf" in cfg.baselines:
        tf = TfidfBaseline(train_texts, train_y, k, ctx.seed)
        tf.save(base_dir / "tfidf.json")
        score("tfidf", "baseline", lambda: tf, base_dir / "tfidf.json", None)

    model_names = []
    for ref in cfg.models:
        folder = resolve_model_ref(ref, ctx.stage_dirs)
        onnx = is_onnx_dir(folder)  # an exported model: model.onnx + tokenizer + config.json
        folder = check_onnx_dir(folder) if onnx else check_model_dir(folder, allow_pickle=ctx.allow_pickle)
        name = _entry_name(ref)
        model_names.append(name)
        score(name, "model", lambda f=folder: load_predictor(f, cfg.max_length, threads, ctx.allow_pickle), folder,
              folder / "model.onnx" if onnx else folder)
        entries[name]["path"] = str(folder)
    # compressed models against their nearest evaluated ancestor, timed by the same harness here
    annotate_gates(entries, {_entry_name(r): r for r in cfg.models}, ctx.stage_dirs)

    reference = _entry_name(cfg.reference) if cfg.reference else model_names[0]
    if reference not in entries:
        from llmopt.errors import RecipeError

        raise RecipeError(f"evaluate '{cfg.id}': reference '{cfg.reference}' is not among models {cfg.models}.")
    for name, e in entries.items():
        if name != reference:
            e["vs_reference"] = paired_bootstrap(
                y, preds[name], preds[reference], k, cfg.bootstrap_resamples, ctx.seed + 1
            )
    return StageResult(
        {
            "split": cfg.split,
            "n": int(len(y)),
            "labels": data.labels,
            "reference": reference,
            "threads": threads,
            "timing": "end to end (tokenization + forward), batch 1 over real test sentences after warm-up",
            "models": entries,
        }
    )
