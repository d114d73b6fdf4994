"""search stage: try compressed students, keep the fastest/smallest within an accuracy tolerance of the teacher.

Every candidate is measured on dev (accuracy with a bootstrap interval, b1 latency, size) by the same
harness as the teacher in this stage, written atomically to candidates/<name>.json as it finishes, and
skipped when the stage is resumed. The chosen model is written to artifacts/model and scored once on test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llmopt.stages.base import StageContext, StageResult, Strict
from llmopt.stages.distill import KDTraining
from llmopt.stages.quantize import Scheme


class SearchSpace(Strict):
    layers: list[int] = Field([2, 3], min_length=1, description="student depths (evenly spaced teacher layers)")
    ffn_keep: list[float] = Field([1.0, 0.5], min_length=1, description="share of FFN neurons kept")
    vocab_trim: list[bool] = Field([True], min_length=1)
    scheme: list[Scheme] = Field(["dynamic_int8"], min_length=1)


class SearchConfig(KDTraining):
    """Search students of the teacher (depth × FFN width × vocabulary trim × quantization) under a dev-accuracy budget."""

    type: Literal["search"] = "search"
    data: str = Field("data", description="id of the data stage")
    teacher: str = Field(description="earlier stage id or model folder")
    max_drop: float = Field(0.01, ge=0, lt=1, description="allowed dev accuracy drop vs the teacher")
    drop: Literal["relative", "absolute"] = "relative"
    objective: Literal["latency", "size"] = "latency"
    time_budget_s: float = Field(1800, gt=0, description="no new candidate starts after this many seconds")
    space: SearchSpace = SearchSpace()
    epochs: float = Field(2, gt=0)
    latency_runs: int = Field(100, ge=10)
    warmup: int = Field(10, ge=1)
    bootstrap_resamples: int = Field(1000, ge=100)

    def model_refs(self) -> list[str]:
        return [self.teacher]


def _measure(pred: Any, texts: list[str], y: Any, labels: list[str], cfg: SearchConfig, ctx: StageContext) -> dict:
    from llmopt.eval.metrics import classification_report
    from llmopt.eval.predictors import predict_all
    from llmopt.eval.speed import measure_speed

    probs = predict_all(pred, texts)
    rep = classification_report(y, probs.argmax(1), labels, cfg.bootstrap_resamples, ctx.seed)
    speed = measure_speed(pred.predict_proba, texts=texts, threads=ctx.threads, warmup=cfg.warmup,
                          latency_runs=cfg.latency_runs, throughput_batches=5)
    return {"accuracy": rep["accuracy"], "accuracy_ci": rep["accuracy_ci"], "macro_f1": rep["macro_f1"],
            **speed, "params": int(pred.params), "runtime": pred.runtime}


def _train_structure(c: dict, t_dir: Path, dest: Path, data: Any, logits: Any, cfg: SearchConfig,
                     ctx: StageContext) -> None:
    """Teacher layers → FFN pruning → vocabulary trimming → distillation; saved to dest (safetensors)."""
    import shutil

    from llmopt.compression import structured
    from llmopt.compression.distillation import evenly_spaced, student_from_teacher, train_distill
    from llmopt.compression.vocab import trim_vocab
    from llmopt.models import load_classifier, load_tokenizer, save_model

    teacher, tok = load_classifier(t_dir, allow_pickle=ctx.allow_pickle), load_tokenizer(t_dir)
    model = student_from_teacher(teacher, evenly_spaced(teacher.config.num_hidden_layers, c["layers"]))
    texts, labels = [r["text"] for r in data.train], data.ids(data.train)
    if c["ffn_keep"] < 1:
        _, ffn = structured.importance(model, tok, texts[:512], labels[:512], cfg.max_length)
        structured.prune_ffn(model, max(1, int(round(c["ffn_keep"] * model.config.intermediate_size))), ffn)
    if c["vocab_trim"]:
        model, tok, _ = trim_vocab(model, tok, texts + [r["text"] for r in data.dev])
    work = dest.parent / f".train-{dest.name}"
    trainer, _ = train_distill(model, tok, (texts, labels), logits, ([r["text"] for r in data.dev], data.ids(data.dev)),
                               len(data.labels), cfg.train_settings(ctx.seed), work, None, cfg.temperature, cfg.alpha)
    save_model(trainer.model, tok, dest)
    shutil.rmtree(work, ignore_errors=True)


def run(cfg: SearchConfig, ctx: StageContext) -> StageResult:
    import shutil

    import numpy as np

    from llmopt.compression import search as S
    from llmopt.compression.distillation import teacher_logits
    from llmopt.compression.gate import speed_gate
    from llmopt.compression.onnx_export import build_onnx_model
    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval.predictors import HFClassifier, OrtClassifier
    from llmopt.fsutil import atomic_replace_dir, atomic_write_json, read_json
    from llmopt.models import weights_size_bytes

    t0 = time.perf_counter()
    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    t_dir = ctx.model_dir(cfg.teacher)
    dev_texts, dev_y = [r["text"] for r in data.dev], np.array(data.ids(data.dev))
    cand_dir, struct_dir = ctx.stage_dir / "candidates", ctx.stage_dir / "structures"

    t_file = cand_dir / "_teacher.json"
    if t_file.is_file():
        teacher = read_json(t_file)
    else:
        teacher = {**_measure(HFClassifier(t_dir, cfg.max_length, ctx.allow_pickle), dev_texts, dev_y, data.labels, cfg, ctx),
                   "size_bytes": weights_size_bytes(t_dir)}
        atomic_write_json(t_file, teacher)
    min_acc = S.threshold(teacher["accuracy"], cfg.max_drop, cfg.drop)
    grid = S.candidate_grid(cfg.space.layers, cfg.space.ffn_keep, cfg.space.vocab_trim, cfg.space.scheme)
    logits = None
    done: dict[str, dict] = {}
    skipped, resumed, out_of_time = [], [], False
    for c in grid:
        name, path = S.candidate_name(c), cand_dir / f"{S.candidate_name(c)}.json"
        if path.is_file():  # finished before an interruption: keep its measurements
            done[name] = read_json(path)
            resumed.append(name)
            continue
        if time.perf_counter() - t0 > cfg.time_budget_s:
            out_of_time = True
            skipped.append(name)
            continue
        c0 = time.perf_counter()
        src = struct_dir / S.structure_name(c)
        if not (src / "config.json").is_file():
            if logits is None:
                logits = teacher_logits(t_dir, [r["text"] for r in data.train], cfg.max_length, ctx.stage_dir / "cache",
                                        allow_pickle=ctx.allow_pickle)
            _train_structure(c, t_dir, src, data, logits, cfg, ctx)
        onnx = ctx.stage_dir / "onnx" / name
        build_onnx_model(src, onnx, c["scheme"], dev_texts[:128], cfg.max_length)
        res = {**c, **_measure(OrtClassifier(onnx, cfg.max_length, ctx.threads), dev_texts, dev_y, data.labels, cfg, ctx),
               "size_bytes": weights_size_bytes(onnx / "model.onnx")}
        res["gate"] = speed_gate(res, teacher, "teacher")
        res["within_tolerance"] = res["accuracy"] >= min_acc
        res["seconds"] = round(time.perf_counter() - c0, 1)
        atomic_write_json(path, res)
        done[name] = res

    chosen, why = S.choose(done, min_acc, cfg.objective)
    metrics: dict[str, Any] = {
        "parent": cfg.teacher, "teacher_dev": S.summary(teacher), "min_dev_accuracy": min_acc,
        "max_drop": cfg.max_drop, "drop": cfg.drop, "objective": cfg.objective,
        "candidates": {n: S.summary(c) | {k: c[k] for k in ("layers", "ffn_keep", "vocab_trim", "scheme")}
                       for n, c in done.items()},
        "pareto": S.pareto(done), "chosen": chosen, "choice": why,
        "resumed_candidates": resumed, "skipped_for_time": skipped, "time_budget_exhausted": out_of_time,
    }
    half = (teacher["accuracy_ci"][1] - teacher["accuracy_ci"][0]) / 2
    if half > teacher["accuracy"] - min_acc:  # say so when dev is too small to resolve the tolerance
        metrics["note"] = (f"the dev set's 95% interval (±{100 * half:.1f} points) is wider than the tolerance "
                           f"({100 * (teacher['accuracy'] - min_acc):.1f} points): the choice on dev is noisy; "
                           "check the chosen model's test accuracy against the teacher's")
    if chosen is not None:
        tmp = ctx.out_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ctx.stage_dir / "onnx" / chosen, tmp)
        atomic_replace_dir(tmp, ctx.out_dir / "model")
        test_texts, test_y = [r["text"] for r in data.test], np.array(data.ids(data.test))
        from llmopt.eval.metrics import classification_report
        from llmopt.eval.predictors import predict_all

        pred = predict_all(OrtClassifier(ctx.out_dir / "model", cfg.max_length, ctx.threads), test_texts).argmax(1)
        rep = classification_report(test_y, pred, data.labels, cfg.bootstrap_resamples, ctx.seed)
        metrics["chosen_test"] = {k: rep[k] for k in ("n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci")}
    return StageResult(metrics)
