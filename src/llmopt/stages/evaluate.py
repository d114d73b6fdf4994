"""evaluate stage: every model beside majority and TF-IDF baselines — quality with intervals, speed, size."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llmopt.stages.base import ModelRef, StageConfig, StageContext, StageRef, StageResult, model_ref_str


class EvaluateConfig(StageConfig):
    """Score models (earlier stage ids or model folders) and baselines on one split of the data stage."""

    type: Literal["evaluate"] = "evaluate"
    data: StageRef = "data"
    models: list[ModelRef] = Field(min_length=1, description="earlier stage ids or model folders")
    reference: ModelRef | None = Field(None, description="model the others are tested against (default: first)")
    split: Literal["test", "dev"] = "test"
    baselines: list[Literal["majority", "tfidf"]] = ["majority", "tfidf"]
    bootstrap_resamples: int = Field(1000, ge=1000)
    max_length: int | None = Field(None, ge=8, description="tokens per text; null: each model's training setting "
                                   "(llmopt_inference.json), else 128; truncation is always the model's own")
    batch_size: int = Field(64, ge=1)
    threads: int | None = Field(None, ge=1, description="threads for timing (default: the run's)")
    warmup: int = Field(10, ge=1)
    latency_runs: int = Field(200, ge=10)
    throughput_batches: int = Field(10, ge=1)
    ort_int8_baseline: bool = Field(
        True, description="also export the reference (a PyTorch model) to ONNX Runtime dynamic int8, evaluate it "
        "as a baseline and gate every ONNX Runtime model against it")


def _input_coverage(folder: Path, max_length: int | None, texts: list[str]) -> dict[str, Any]:
    """max_length and truncation a model's predictor used, and how much of the split's texts it kept."""
    from llmopt.models import inference_settings, load_tokenizer
    from llmopt.training.tokenize import coverage, token_lengths

    length, truncation = inference_settings(folder, max_length)
    return {**coverage(token_lengths(load_tokenizer(folder), texts), length), "truncation": truncation}


def _entry_name(ref: object) -> str:
    ref = model_ref_str(ref)
    return Path(ref).name if ("/" in ref or ref.startswith(".")) else ref


def _model_folder(ref: object, ctx: StageContext) -> Path:
    """The folder a model ref names; a clear error for an earlier stage that kept no model (a search that
    found no candidate passing its gate)."""
    from llmopt.errors import ModelError
    from llmopt.fsutil import read_json
    from llmopt.models import resolve_model_ref

    s = model_ref_str(ref)
    folder = resolve_model_ref(s, ctx.stage_dirs)
    if s in ctx.stage_dirs and not folder.exists():
        m = ctx.stage_dirs[s] / "metrics.json"
        why = read_json(m).get("choice") if m.is_file() else None
        raise ModelError(f"stage '{s}' wrote no model" + (f" ({why})" if why else "") +
                         f"; remove '{s}' from the evaluate stage's models, or change that stage so that it keeps one.")
    return folder


def run(cfg: EvaluateConfig, ctx: StageContext) -> StageResult:
    """Score every model and the baselines on one split: quality with intervals and a paired test against the
    reference, speed and size by one harness, per-example predictions in artifacts/predictions/."""
    import numpy as np

    import gc

    from llmopt.compression.gate import MARGIN, annotate_gates, export_ort_int8_reference, gate_parents, speed_gate
    from llmopt.compression.onnx_export import check_onnx_dir, is_onnx_dir
    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval.baselines import MajorityBaseline, TfidfBaseline
    from llmopt.eval.metrics import classification_report, paired_bootstrap
    from llmopt.eval.predictors import load_predictor, predict_all
    from llmopt.eval.speed import PeakRSS, compare_latency, measure_speed
    from llmopt.fsutil import atomic_write_jsonl, dir_size_bytes
    from llmopt.models import check_model_dir, weights_size_bytes

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    rows = data.split(cfg.split)
    texts = [r["text"] for r in rows]
    y = np.array(data.ids(rows))
    k = len(data.labels)
    threads = cfg.threads or ctx.threads
    train_texts, train_y = [r["text"] for r in data.train], data.ids(data.train)

    entries: dict[str, dict[str, Any]] = {}
    preds: dict[str, np.ndarray] = {}
    builders: dict[str, Any] = {}  # name -> function that loads the predictor again, for paired timing

    def score(name: str, kind: str, build, size_path: Path | None, weights_path: Path | None) -> None:
        with PeakRSS() as mem:  # loading + inference over the whole split
            predictor = build()
            probs = predict_all(predictor, texts, cfg.batch_size)
        builders[name] = build
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

    baseline_dir = ctx.out_dir / "baselines"
    if "majority" in cfg.baselines:
        maj = MajorityBaseline(train_y, k)
        maj.save(baseline_dir / "majority.json")
        score("majority", "baseline", lambda: maj, baseline_dir / "majority.json", None)
    if "tfidf" in cfg.baselines:
        tf = TfidfBaseline(train_texts, train_y, k, ctx.seed)
        tf.save(baseline_dir / "tfidf.json")
        score("tfidf", "baseline", lambda: tf, baseline_dir / "tfidf.json", None)

    model_names, model_refs = [], {}
    for ref in cfg.models:
        folder = _model_folder(ref, ctx)
        onnx = is_onnx_dir(folder)  # an exported model: model.onnx + tokenizer + config.json
        folder = check_onnx_dir(folder) if onnx else check_model_dir(folder, allow_pickle=ctx.allow_pickle)
        name = _entry_name(ref)
        model_names.append(name)
        model_refs[name] = model_ref_str(ref)
        score(name, "model", lambda f=folder: load_predictor(f, cfg.max_length, threads, ctx.allow_pickle), folder,
              folder / "model.onnx" if onnx else folder)
        entries[name]["path"] = str(folder)
        entries[name]["input"] = _input_coverage(folder, cfg.max_length, texts)

    reference = _entry_name(cfg.reference) if cfg.reference else model_names[0]
    if reference not in entries:
        from llmopt.errors import RecipeError

        raise RecipeError(f"evaluate '{cfg.id}': reference '{cfg.reference}' is not among models {cfg.models}.")

    # the reference's own ONNX Runtime dynamic-int8 export: the best runtime one gets without compressing
    ort_ref = None
    ref_path = entries[reference].get("path")  # None when the reference is a baseline
    if cfg.ort_int8_baseline and ref_path and not is_onnx_dir(Path(ref_path)):
        ort_ref = f"{reference}-ort-int8"
        while ort_ref in entries:
            ort_ref += "_"
        dest = ctx.out_dir / "reference-ort-int8"
        export_ort_int8_reference(Path(ref_path), dest, max_length=cfg.max_length or 128,
                                  allow_pickle=ctx.allow_pickle)
        score(ort_ref, "baseline", lambda: load_predictor(dest, cfg.max_length, threads), dest, dest / "model.onnx")
        entries[ort_ref].update(path=str(dest), source=reference)

    def paired(child: str, parent: str) -> dict[str, Any]:
        """Both predictors alive at once, timed interleaved (ABBA) on the same batch-1 inputs."""
        a, b = builders[child](), builders[parent]()
        try:
            return compare_latency(child=a.predict_proba, parent=b.predict_proba, texts=texts, threads=threads,
                                   runs=cfg.latency_runs, warmup=cfg.warmup, resamples=cfg.bootstrap_resamples,
                                   seed=ctx.seed)
        finally:
            del a, b
            gc.collect()

    # compressed models against their nearest evaluated ancestor; ONNX Runtime models also against the
    # reference's ONNX Runtime int8 export
    timings = {child: paired(child, parent) for child, parent in gate_parents(model_refs, ctx.stage_dirs).items()}
    annotate_gates(entries, model_refs, ctx.stage_dirs, timings)
    if ort_ref is not None:
        for name in model_names:
            if entries[name]["runtime"].startswith("onnxruntime"):
                entries[name]["gate_vs_ort_int8"] = speed_gate(entries[name], entries[ort_ref], ort_ref,
                                                               timing=paired(name, ort_ref))

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
            "gate_timing": (f"paired: model and its parent alive at once, timed in alternating (ABBA) blocks of calls "
                            f"on the same batch-1 inputs ({cfg.latency_runs} runs each); faster = the 95% bootstrap "
                            f"interval of the median latency ratio lies below {1 - MARGIN:.2f}"),
            "ort_int8_baseline": ort_ref,
            "models": entries,
        }
    )


def section(sid: str, m: dict, doc: Any) -> None:
    """Quality with intervals, speed and size of every model and baseline; per-class results; confusion matrices."""
    from llmopt.report import plots
    from llmopt.report.answer import recommend
    from llmopt.report.render import _num, _pct, _slug, results_tables

    doc.h(2, f"Evaluation ({sid}) — {m['split']} split, n = {m['n']}")
    doc.p(
        f"Accuracy and macro-F1 with 95% bootstrap intervals ({m['n']:,} {m['split']} rows). Δ is the accuracy "
        f"difference from '{m['reference']}' in percentage points with its 95% paired-bootstrap interval; p is "
        f"two-sided. Timing: {m['timing']}, {m['threads']} threads. Peak memory is not shown: it was sampled for the "
        "whole evaluating process, which holds every model and baseline in turn, so it does not tell them apart."
    )
    results_tables(m, doc)
    gates = [(n, g) for n, mm in m["models"].items() for g in (mm.get("gate"), mm.get("gate_vs_ort_int8")) if g]
    if gates:
        doc.h(3, "Speed/size gates")
        margin = gates[0][1].get("margin", 0.03)
        doc.p(f"Timing: {m.get('gate_timing', 'separate runs')}; slower = its lower bound above {1 + margin:.2f}, "
              "otherwise no measurable difference. A model passes only if measurably faster and smaller."
              + (f" '{m['ort_int8_baseline']}' is the reference's own ONNX Runtime dynamic-int8 export, the "
                 "best runtime without compression; ONNX Runtime models are also compared with it."
                 if m.get("ort_int8_baseline") else ""))
        head = ["model", "against", "latency ratio [95% CI]", "verdict", "size ratio", "result"]
        rows = [[n, g["parent"],
                 "—" if g.get("ratio_ci") is None else f"{g['latency_ratio']:.3f} [{g['ratio_ci'][0]:.3f}, {g['ratio_ci'][1]:.3f}]",
                 g.get("verdict", ""), _num(g.get("size_ratio"), "{:.2f}x smaller"),
                 "passed" if g["passed"] else f"FLAGGED: {g['flag']}"] for n, g in gates]
        doc.table(head, rows)
    name = f"{sid}-accuracy-latency.svg"
    svg = plots.accuracy_vs_latency(m["models"], highlight=recommend(m)["name"])
    doc.figure(name, svg, f"Test accuracy (95% CI) against batch-1 latency; marker area ∝ size on disk; the line is "
               f"the Pareto front (no entry is both faster and more accurate). Entries faster than "
               f"{plots.OFF_SCALE_MS:g} ms (the majority baseline) sit at the left edge, their latency in the label.")
    name = f"{sid}-size.svg"
    svg = plots.sizes(m["models"])
    doc.figure(name, svg, "Weights on disk (baselines: their saved file)")
    doc.h(3, "Per-class results")
    head = ["model", "class", "precision", "recall", "F1", "support"]
    rows = [[n, lab, _pct(pc["precision"]), _pct(pc["recall"]), _pct(pc["f1"]), str(pc["support"])]
            for n, mm in m["models"].items() for lab, pc in mm["per_class"].items()]
    doc.table(head, rows)
    for n, mm in m["models"].items():
        if mm["kind"] == "model" or n == m["reference"]:
            name = f"{sid}-confusion-{_slug(n)}.svg"
            svg = plots.confusion_matrix(mm["confusion_matrix"], m["labels"], f"Confusion matrix: {n}")
            doc.figure(name, svg, f"Confusion matrix of {n} (rows true, columns predicted)")
