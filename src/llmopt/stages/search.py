"""search stage: try compressed students, keep the fastest/smallest within an accuracy tolerance of the teacher.

Every candidate is measured on dev (accuracy with a bootstrap interval, b1 latency, size) by the same
harness as the teacher in this stage, timed against the teacher with both alive (interleaved paired
timing) for the speed gate and against the teacher's own ONNX Runtime dynamic-int8 export (reported),
written atomically to candidates/<name>.json as it finishes, and skipped when the stage is resumed.
The chosen model is written to artifacts/model and scored once on test; when no candidate passes the
gate, none is chosen and the stage writes no model (metrics say why).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llmopt.compression.schemes import Scheme
from llmopt.stages.base import (
    InputFile, ModelRef, StageConfig, StageContext, StageRef, StageResult, Strict, model_ref_str,
)
from llmopt.training.config import KDConfig, TrainConfig


class SearchSpace(Strict):
    """The candidates: every combination that applies to each family (`compression.search.candidate_grid`)."""

    family: list[Literal["transformer", "bilstm", "cnn"]] = Field(
        ["transformer"], min_length=1, description="transformer: the teacher's layers (and widths); bilstm / cnn: "
        "a non-transformer student over the teacher's tokenizer (Tang et al. 2019), embeddings from the teacher's")
    layers: list[int] = Field([2, 3], min_length=1, description="transformer: depth (evenly spaced teacher layers); "
                              "bilstm: stacked LSTM layers")
    hidden: list[int | None] = Field([None], min_length=1, description="transformer: residual width (null: the "
                                     "teacher's; narrower: every matrix cut from the teacher's); bilstm: units per "
                                     "direction; cnn: maps per kernel size (null: 128)")
    ffn_keep: list[float] = Field([1.0, 0.5], min_length=1, description="transformer: share of FFN neurons kept")
    attention_loss: list[float] = Field([0.0], min_length=1, description="transformer: weight of the last-layer "
                                        "attention KL (MiniLM)")
    hidden_loss: list[float] = Field([0.0], min_length=1, description="transformer: weight of the hidden-state MSE "
                                     "(TinyBERT; a learnt projection when narrower)")
    embed_dim: list[int] = Field([128], min_length=1, description="bilstm / cnn: embedding width (PCA of the "
                                 "teacher's input embeddings)")
    vocab_trim: list[bool] = Field([True], min_length=1)
    scheme: list[Scheme] = Field(["dynamic_int8"], min_length=1)


class SearchConfig(StageConfig):
    """Search students of the teacher (family × depth × width × FFN × layer-wise losses × vocabulary trim ×
    quantization) under a dev-accuracy budget."""

    type: Literal["search"] = "search"
    data: StageRef = "data"
    teacher: ModelRef = Field(description="earlier stage id or model folder")
    max_drop: float = Field(0.01, ge=0, lt=1, description="allowed dev accuracy drop vs the teacher")
    drop: Literal["relative", "absolute"] = "relative"
    objective: Literal["latency", "size"] = "latency"
    time_budget_s: float = Field(1800, gt=0, description="no new candidate starts after this many seconds")
    space: SearchSpace = SearchSpace()
    extra_texts: list[InputFile] = Field([], description="JSONL (text) or .txt files of unlabelled transfer text, "
                                         "teacher-labelled, as in distill")
    transfer: StageRef | None = Field(None, description="an augment stage: its variants join the transfer set")
    unlabelled: bool = Field(True, description="add the data stage's unlabelled texts to the transfer set, as in "
                             "distill")
    max_transfer_rows: int | None = Field(None, ge=1, description="at most this many unlabelled transfer texts")
    latency_runs: int = Field(100, ge=10)
    warmup: int = Field(10, ge=1)
    latency_threads: list[int] = Field([], description="also time each candidate at batch 1 with these ONNX Runtime "
                                       "intra-op thread counts (reported; the gate uses the run's threads)")
    bootstrap_resamples: int = Field(1000, ge=100)
    ort_int8_baseline: bool = Field(
        True, description="also export the teacher to ONNX Runtime dynamic int8 and report each candidate's "
        "latency ratio against it (the best runtime without compression)")
    kd: KDConfig = KDConfig()
    train: TrainConfig = TrainConfig(learning_rate=1e-4, epochs=2)
    textnet_train: TrainConfig = Field(
        TrainConfig(learning_rate=2e-3, epochs=10, warmup_ratio=0.0, early_stopping_patience=3),
        description="training block of the bilstm / cnn candidates (trained from scratch: larger rate, more epochs)")


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
                     ctx: StageContext, max_length: int, truncation: str = "right", extra: list[str] = ()) -> None:
    """Vocabulary trimming → a student of the candidate's family (teacher layers cut to its widths → FFN pruning;
    or a BiLSTM / CNN with PCA'd teacher embeddings) → distillation on the labelled rows plus the `extra`
    teacher-labelled texts (logits has one row per text, labelled first); saved to dest (safetensors)."""
    import shutil

    from llmopt.compression import structured
    from llmopt.compression.distillation import evenly_spaced, narrow_student
    from llmopt.compression.vocab import trim_vocab
    from llmopt.models import load_classifier, load_tokenizer, save_model
    from llmopt.training.losses import LayerwiseKD
    from llmopt.training.trainer import train_classifier

    teacher, tok = load_classifier(t_dir, allow_pickle=ctx.allow_pickle), load_tokenizer(t_dir)
    texts, labels = [r["text"] for r in data.train], data.ids(data.train)
    if c["vocab_trim"]:  # the teacher trimmed alike, so layer-wise losses read the same ids
        teacher, tok, _ = trim_vocab(teacher, tok, texts + list(extra) + [r["text"] for r in data.dev])
    family, layerwise, train_cfg = c.get("family", "transformer"), None, cfg.train
    if family == "transformer":
        layers = evenly_spaced(teacher.config.num_hidden_layers, c["layers"])
        model = narrow_student(teacher, layers, c.get("hidden"))
        if c["ffn_keep"] < 1:
            _, ffn = structured.importance(model, tok, texts[:512], labels[:512], max_length)
            structured.prune_ffn(model, max(1, int(round(c["ffn_keep"] * model.config.intermediate_size))), ffn)
        if c.get("attention_loss") or c.get("hidden_loss"):
            layerwise = LayerwiseKD(teacher, model, layers, hidden_weight=c.get("hidden_loss", 0.0),
                                    attention_weight=c.get("attention_loss", 0.0),
                                    include_embeddings=bool(c.get("hidden")))
    else:
        from llmopt.compression.rnn_student import textnet_student

        model = textnet_student(family, tok, data.labels, embed_dim=c["embed_dim"], hidden=c["hidden"],
                                layers=c["layers"], teacher_embeddings=teacher.get_input_embeddings().weight)
        train_cfg = cfg.textnet_train
    if layerwise is None:
        del teacher
    work = dest.parent / f".train-{dest.name}"
    train_cfg = train_cfg.model_copy(update={"max_length": max_length, "truncation": truncation})
    out = train_classifier(model, tok, train=(texts + list(extra), labels + [-100] * len(extra)),
                           dev=(data.texts("dev"), data.ids(data.dev)), num_labels=len(data.labels), cfg=train_cfg,
                           seed=ctx.seed, work_dir=work, teacher_logits=logits, kd=cfg.kd, hidden=layerwise)
    if layerwise is not None:
        layerwise.detach()
    save_model(out.model, tok, dest, inference=out.inference)
    shutil.rmtree(work, ignore_errors=True)


def latency_by_threads(folder: Path, texts: list[str], threads: list[int], max_length: int, truncation: str,
                       cfg: SearchConfig) -> dict[str, float]:
    """Batch-1 p50 (ms) of the ONNX model in `folder` with each intra-op thread count, one session each."""
    from llmopt.eval.predictors import OrtClassifier
    from llmopt.eval.speed import measure_speed

    out = {}
    for t in dict.fromkeys(threads):
        pred = OrtClassifier(folder, max_length, t, truncation)
        out[str(t)] = measure_speed(pred.predict_proba, texts=texts, threads=t, warmup=cfg.warmup,
                                    latency_runs=cfg.latency_runs, throughput_batches=1)["latency_b1_p50_ms"]
    return out


def run(cfg: SearchConfig, ctx: StageContext) -> StageResult:
    """Measure the teacher on dev, then train, export and measure each candidate student (resumable, within the
    time budget); keep the fastest (or smallest) gated one within the accuracy budget and score it once on test."""
    import shutil

    import numpy as np

    from llmopt.compression import search as S
    from llmopt.compression.distillation import RUN_CACHE, gather_transfer_texts, teacher_logits
    from llmopt.compression.gate import export_ort_int8_reference, speed_gate
    from llmopt.compression.onnx_export import build_onnx_model
    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval.predictors import HFClassifier, OrtClassifier
    from llmopt.eval.speed import compare_latency
    from llmopt.fsutil import atomic_replace_dir, atomic_write_json, read_json
    from llmopt.models import load_tokenizer, read_inference_settings, weights_size_bytes
    from llmopt.training.config import with_model_settings
    from llmopt.training.tokenize import max_length_for

    t0 = time.perf_counter()
    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    t_dir = ctx.model_dir(cfg.teacher)
    train_cfg = with_model_settings(cfg.train, read_inference_settings(t_dir))  # unset: as the teacher was trained
    truncation = train_cfg.truncation
    max_length = max_length_for(train_cfg.max_length, load_tokenizer(t_dir), data.texts("train"))
    dev_texts, dev_y = [r["text"] for r in data.dev], np.array(data.ids(data.dev))
    cand_dir, struct_dir = ctx.stage_dir / "candidates", ctx.stage_dir / "structures"

    live: dict[str, Any] = {}  # predictors kept alive for paired timing, loaded when first needed

    def teacher_pred() -> Any:
        if "teacher" not in live:
            live["teacher"] = HFClassifier(t_dir, max_length, ctx.allow_pickle, truncation)
        return live["teacher"]

    t_file = cand_dir / "_teacher.json"
    if t_file.is_file():
        teacher = read_json(t_file)
    else:
        teacher = {**_measure(teacher_pred(), dev_texts, dev_y, data.labels, cfg, ctx),
                   "size_bytes": weights_size_bytes(t_dir)}
        atomic_write_json(t_file, teacher)

    # the teacher's own ONNX Runtime dynamic-int8 export, measured once: the best runtime without compression
    ort_dir, ort_file, ort_ref = ctx.stage_dir / "onnx" / "_teacher-ort-int8", cand_dir / "_teacher_ort_int8.json", None

    def ort_pred() -> Any:
        if "ort" not in live:
            if not (ort_dir / "model.onnx").is_file():
                export_ort_int8_reference(t_dir, ort_dir, max_length=max_length, allow_pickle=ctx.allow_pickle)
            live["ort"] = OrtClassifier(ort_dir, max_length, ctx.threads, truncation)
        return live["ort"]

    if cfg.ort_int8_baseline:
        if ort_file.is_file():
            ort_ref = read_json(ort_file)
        else:
            ort_ref = {**_measure(ort_pred(), dev_texts, dev_y, data.labels, cfg, ctx),
                       "size_bytes": weights_size_bytes(ort_dir / "model.onnx")}
            atomic_write_json(ort_file, ort_ref)

    def paired(child: Any, parent: Any) -> dict:
        return compare_latency(child=child.predict_proba, parent=parent.predict_proba, texts=dev_texts,
                               threads=ctx.threads, runs=cfg.latency_runs, warmup=cfg.warmup,
                               resamples=cfg.bootstrap_resamples, seed=ctx.seed)
    min_acc = S.threshold(teacher["accuracy"], cfg.max_drop, cfg.drop)
    sp = cfg.space
    grid = S.candidate_grid(sp.layers, sp.ffn_keep, sp.vocab_trim, sp.scheme, family=sp.family, hidden=sp.hidden,
                            embed_dim=sp.embed_dim, attention_loss=sp.attention_loss, hidden_loss=sp.hidden_loss)
    extra = gather_transfer_texts(cfg, ctx, data.unlabelled)
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
                logits = teacher_logits(t_dir, data.texts("train") + extra, max_length=max_length,
                                        truncation=truncation, cache=ctx.run_dir / RUN_CACHE,
                                        allow_pickle=ctx.allow_pickle)
            _train_structure(c, t_dir, src, data, logits, cfg, ctx, max_length, truncation, extra)
        onnx = ctx.stage_dir / "onnx" / name
        build_onnx_model(src, onnx, c["scheme"], dev_texts[:128], max_length, truncation=truncation)
        cand = OrtClassifier(onnx, max_length, ctx.threads, truncation)
        res = {**c, **_measure(cand, dev_texts, dev_y, data.labels, cfg, ctx),
               "size_bytes": weights_size_bytes(onnx / "model.onnx")}
        if cfg.latency_threads:  # reported only: the same model at other intra-op thread counts
            res["latency_b1_p50_ms_by_threads"] = latency_by_threads(onnx, dev_texts, cfg.latency_threads,
                                                                    max_length, truncation, cfg)
        # the gate: measurably faster (teacher alive beside it, interleaved paired timing) and smaller
        res["gate"] = speed_gate(res, teacher, "teacher", timing=paired(cand, teacher_pred()))
        if ort_ref is not None:  # reported, not gating: how it compares with the teacher's ORT int8 export
            res["gate_vs_ort_int8"] = speed_gate(res, ort_ref, "teacher-ort-int8", timing=paired(cand, ort_pred()))
        del cand
        res["within_tolerance"] = res["accuracy"] >= min_acc
        res["seconds"] = round(time.perf_counter() - c0, 1)
        atomic_write_json(path, res)
        done[name] = res

    chosen, why = S.choose(done, min_acc, cfg.objective)
    metrics: dict[str, Any] = {
        "parent": model_ref_str(cfg.teacher), "max_length": max_length, "truncation": truncation,
        "teacher_dev": S.summary(teacher), "min_dev_accuracy": min_acc,
        "max_drop": cfg.max_drop, "drop": cfg.drop, "objective": cfg.objective,
        "teacher_ort_int8_dev": S.summary(ort_ref) if ort_ref is not None else None,
        "candidates": {n: S.summary(c) | {k: c.get(k) for k in S.CANDIDATE_KEYS + ("gate_vs_ort_int8",
                                                                                 "latency_b1_p50_ms_by_threads")}
                       for n, c in done.items()},
        "transfer_rows": len(data.train) + len(extra), "unlabelled_rows": len(extra), "transfer_stage": cfg.transfer,
        "passed_gate": sorted(n for n, c in done.items() if c["gate"]["passed"]),
        "pareto": S.pareto(done), "chosen": chosen, "choice": why,
        "resumed_candidates": resumed, "skipped_for_time": skipped, "time_budget_exhausted": out_of_time,
    }
    half = (teacher["accuracy_ci"][1] - teacher["accuracy_ci"][0]) / 2
    if half > teacher["accuracy"] - min_acc:  # say so when dev is too small to resolve the tolerance
        metrics["note"] = (f"the dev set's 95% interval (±{100 * half:.1f} points) is wider than the tolerance "
                           f"({100 * (teacher['accuracy'] - min_acc):.1f} points): the choice on dev is noisy; "
                           "check the chosen model's test accuracy against the teacher's")
    live.clear()
    if chosen is None:  # no model: a later stage naming this one gets a clear error, not a stale folder
        shutil.rmtree(ctx.out_dir / "model", ignore_errors=True)
    else:
        tmp = ctx.out_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ctx.stage_dir / "onnx" / chosen, tmp)
        atomic_replace_dir(tmp, ctx.out_dir / "model")
        test_texts, test_y = [r["text"] for r in data.test], np.array(data.ids(data.test))
        from llmopt.eval.metrics import classification_report
        from llmopt.eval.predictors import predict_all

        pred = predict_all(OrtClassifier(ctx.out_dir / "model", max_length, ctx.threads, truncation),
                           test_texts).argmax(1)
        rep = classification_report(test_y, pred, data.labels, cfg.bootstrap_resamples, ctx.seed)
        metrics["chosen_test"] = {k: rep[k] for k in ("n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci")}
    return StageResult(metrics)


def section(sid: str, m: dict, doc: Any) -> None:
    """Teacher on dev, the tolerance, every candidate measured, the choice and its test score."""
    from llmopt.report import plots
    from llmopt.report.render import _ci, _num, _pct

    doc.h(2, f"Accuracy-budget search ({sid})")
    t = m["teacher_dev"]
    doc.p(
        f"Teacher dev accuracy {_pct(t['accuracy'])}%; tolerance: {m['drop']} drop {m['max_drop']:g} "
        f"(at least {_pct(m['min_dev_accuracy'])}%). Objective: {m['objective']}. "
        + (f"Chosen: {m['chosen']} ({m['choice']}). " if m["chosen"] else f"No model kept: {m['choice']}. ")
        + "A candidate is chosen only if it passed the speed/size gate: smaller than the teacher and measurably "
        "faster, timed beside it (interleaved paired batch-1 timing; the 95% interval of the latency ratio "
        "below 1 minus the margin). Flagged candidates are never chosen."
        + (" Each candidate's latency ratio to the teacher's own ONNX Runtime dynamic-int8 export (the best "
           "runtime without compression) is reported beside it." if m.get("teacher_ort_int8_dev") else "")
        + (f" Time budget ran out; not tried: {', '.join(m['skipped_for_time'])}." if m["skipped_for_time"] else "")
    )
    if m.get("note"):
        doc.p(f"Note: {m['note']}.")
    if m.get("chosen_test"):
        ct = m["chosen_test"]
        doc.p(f"Chosen model, once on test (n = {ct['n']}): accuracy {_pct(ct['accuracy'])}%{_ci(ct['accuracy_ci'])}, "
              f"macro-F1 {_pct(ct['macro_f1'])}%{_ci(ct['macro_f1_ci'])}.")

    def ratio(g: dict | None) -> str:
        if not g or g.get("ratio_ci") is None:
            return "—"
        return f"{g['latency_ratio']:.3f} [{g['ratio_ci'][0]:.3f}, {g['ratio_ci'][1]:.3f}]"

    # two narrow tables (what each candidate is and how accurate; how fast and large) rather than one of ten columns
    cands = m["candidates"].items()
    from llmopt.compression.search import describe

    doc.table(["candidate", "student", "vocabulary", "scheme", "dev acc % [95% CI]", "within tolerance", "result"],
              [[n, describe(c), "trimmed" if c.get("vocab_trim") else "full", str(c.get("scheme", "")),
                _pct(c["accuracy"]) + _ci(c["accuracy_ci"]), "yes" if c["within_tolerance"] else "no",
                "chosen" if n == m["chosen"] else "Pareto frontier" if n in m["pareto"] else ""] for n, c in cands])
    by_threads = sorted({t for c in m["candidates"].values() for t in (c.get("latency_b1_p50_ms_by_threads") or {})},
                        key=int)
    doc.table(["candidate", "p50 ms", *(f"p50 ms, {t} thread{'s' * (t != '1')}" for t in by_threads), "weights MB",
               "params", "latency ÷ teacher [95% CI]", "latency ÷ teacher ORT int8 [95% CI]", "gate"],
              [[n, _num(c["latency_b1_p50_ms"]),
                *(_num((c.get("latency_b1_p50_ms_by_threads") or {}).get(t)) for t in by_threads),
                _num(c["size_bytes"] / 2**20), f"{c['params']:,}", ratio(c["gate"]),
                ratio(c.get("gate_vs_ort_int8")), "passed" if c["gate"]["passed"] else f"flagged: {c['gate']['flag']}"]
               for n, c in cands])
    if m["candidates"]:
        name = f"{sid}-pareto.svg"
        svg = plots.search_pareto(m["candidates"], t, m["pareto"], m["chosen"], m["min_dev_accuracy"])
        doc.figure(name, svg, "Search candidates: dev accuracy against batch-1 latency; marker area ∝ size on disk; "
                   "the line is the Pareto frontier, the dashed line the accuracy tolerance")
