"""evaluate stage: every model beside majority and TF-IDF baselines — quality with intervals, speed, size."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmopt.stages.base import InputFile, ModelRef, StageConfig, StageContext, StageRef, StageResult, model_ref_str
from llmopt.training.config import InstructionConfig  # the one instruction schema, as finetune (task: sft) has it


class EvaluateConfig(StageConfig):
    """Score models (earlier stage ids or model folders) and baselines on one split of the data stage."""

    type: Literal["evaluate"] = "evaluate"
    data: StageRef | None = Field("data", description="the data stage (null: causal LMs on `text` only)")
    models: list[ModelRef] = Field(min_length=1, description="earlier stage ids, model folders, GGUF folders or "
                                   "*.gguf files; encoders and causal LMs may be mixed")
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
    # causal LMs
    text: InputFile | None = Field(None, description="perplexity corpus: .txt (one document) or .jsonl with "
                                   "`text`; default: the data stage's split texts")
    ppl_window: int = Field(512, ge=2, description="tokens per perplexity window")
    ppl_stride: int | None = Field(None, ge=1, description="tokens between window starts (default: ppl_window, "
                                   "non-overlapping; smaller: overlapping context, each token still scored once)")
    max_ppl_tokens: int | None = Field(32767, ge=2, description="first N tokens of the corpus (null: all)")
    prompts: InputFile | None = Field(None, description="speed prompts: .txt (one per line) or .jsonl with "
                                      "`prompt`; default: a built-in fixed set of 24")
    speed_prompts: int = Field(20, ge=1, description="how many of the prompts are timed")
    max_new_tokens: int = Field(128, ge=2, description="new tokens per prompt, forced (EOS ignored), greedy")
    generation_warmup: int = Field(2, ge=0)
    instruction: InstructionConfig | None = Field(None, description="classification-as-instruction for a causal model "
                                            "without llmopt_instruction.json (e.g. zero-shot)")
    sft_scoring: Literal["loglik", "generate"] = Field(
        "loglik", description="loglik: the most likely label word after the prompt; generate: a greedy answer "
        "parsed to a label (unparseable answers count as wrong)")

    @model_validator(mode="after")
    def _ppl_stride(self) -> "EvaluateConfig":
        if self.ppl_stride is not None and self.ppl_stride > self.ppl_window:
            raise ValueError(f"ppl_stride ({self.ppl_stride}) must not exceed ppl_window ({self.ppl_window})")
        return self


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
    """Score every model on one split. Encoders and the baselines: quality with intervals and a paired test
    against the reference, speed and size by one harness, per-example predictions in artifacts/predictions/.
    Causal LMs (under the `causal` key): perplexity [95% CI], prefill/decode tokens/s, peak memory, size, and
    label accuracy when an instruction is known."""
    from llmopt.errors import RecipeError
    from llmopt.eval.causal import is_causal_path

    folders = {model_ref_str(ref): _model_folder(ref, ctx) for ref in cfg.models}
    causal = [ref for ref in cfg.models if is_causal_path(folders[model_ref_str(ref)])]
    encoders = [ref for ref in cfg.models if ref not in causal]
    if encoders and cfg.data is None:
        raise RecipeError(f"evaluate '{cfg.id}': models {[model_ref_str(r) for r in encoders]} are classifiers and "
                          "need a data stage; set data: to one.")
    if causal and cfg.data is None and cfg.text is None:
        raise RecipeError(f"evaluate '{cfg.id}': give text: (a perplexity corpus) or data: (a data stage) for "
                          "the causal models.")
    metrics = _run_encoders(cfg, ctx, encoders) if encoders else {}
    if causal:
        metrics["causal"] = _run_causal(cfg, ctx, causal, folders)
        _paired_causal(cfg, ctx, metrics)
    return StageResult(metrics)


def _paired_causal(cfg: EvaluateConfig, ctx: StageContext, metrics: dict[str, Any]) -> None:
    """Move each label-scored causal model's predictions to artifacts/predictions/<name>.jsonl and test it (paired
    bootstrap on the same rows) against the reference: the `reference:` when that is a causal model, else the
    classifiers' reference; `paired` holds it against every other label-scored causal model."""
    import numpy as np

    from llmopt.eval.metrics import paired_bootstrap
    from llmopt.fsutil import atomic_write_jsonl, read_jsonl

    c = metrics["causal"]
    scored = {n: e["classification"] for n, e in c["models"].items() if e.get("classification")}
    if not scored:
        return
    labels = c["labels"]
    k = len(labels) + 1  # an unparseable answer is its own (always wrong) class
    preds = {n: np.asarray(cl.pop("preds")) for n, cl in scored.items()}
    from llmopt.data.artifact import load_data_artifact

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    split = data.split(cfg.split)
    y = np.asarray(data.ids(split))
    for n, cl in scored.items():
        answers = cl.pop("answers") or [None] * len(split)
        atomic_write_jsonl(ctx.out_dir / "predictions" / f"{n.replace('/', '_').replace(':', '_')}.jsonl", (
            {"text": r["text"], "label": r["label"], "pred": labels[p] if p < len(labels) else None,
             **({"answer": a} if a is not None else {})} for r, p, a in zip(split, preds[n], answers)))
    ref_name = _entry_name(cfg.reference) if cfg.reference is not None else None
    ref_pred, ref_label = None, None
    if ref_name in preds:
        ref_pred, ref_label = preds[ref_name], ref_name
    elif metrics.get("models"):
        ref_label = metrics["reference"]
        index = {lab: i for i, lab in enumerate(labels)}
        ref_rows = read_jsonl(ctx.out_dir / "predictions" / f"{ref_label}.jsonl")
        ref_pred = np.asarray([index[r["pred"]] for r in ref_rows])
    for n, cl in scored.items():
        if ref_pred is not None and n != ref_label:
            c["models"][n]["vs_reference"] = {"reference": ref_label, **paired_bootstrap(
                y, preds[n], ref_pred, k, cfg.bootstrap_resamples, ctx.seed + 1)}
        cl["paired"] = {o: paired_bootstrap(y, preds[n], preds[o], k, cfg.bootstrap_resamples, ctx.seed + 1)
                        for o in scored if o != n}


def _run_causal(cfg: EvaluateConfig, ctx: StageContext, refs: list, folders: dict[str, Path]) -> dict[str, Any]:
    """Every causal model through the same perplexity corpus, prompts and split (each with its own tokenizer)."""
    from llmopt.eval.causal_eval import evaluate_causal_model
    from llmopt.eval.generation import PROMPTS, read_prompts
    from llmopt.eval.perplexity import read_texts

    rows, labels, classify_rows = None, None, None
    if cfg.data is not None:
        from llmopt.data.artifact import load_data_artifact

        data = load_data_artifact(ctx.artifacts_of(cfg.data))
        rows, labels = data.split(cfg.split), data.labels
        classify_rows = ([r["text"] for r in rows], data.ids(rows), labels)
    ppl_texts = read_texts(Path(cfg.text)) if cfg.text else [r["text"] for r in rows]
    prompts = (read_prompts(Path(cfg.prompts)) if cfg.prompts else PROMPTS)[: cfg.speed_prompts]
    threads = cfg.threads or ctx.threads
    instruction = cfg.instruction.model_dump() if cfg.instruction else None
    models = {}
    for ref in refs:
        models[_entry_name(ref)] = evaluate_causal_model(
            folders[model_ref_str(ref)], threads=threads, ppl_texts=ppl_texts, window=cfg.ppl_window,
            stride=cfg.ppl_stride or cfg.ppl_window, max_ppl_tokens=cfg.max_ppl_tokens, prompts=prompts,
            max_new_tokens=cfg.max_new_tokens, warmup=cfg.generation_warmup, resamples=cfg.bootstrap_resamples,
            seed=ctx.seed, allow_pickle=ctx.allow_pickle, classify_rows=classify_rows, instruction=instruction,
            sft_scoring=cfg.sft_scoring)
    return {
        "threads": threads,
        "ppl_corpus": cfg.text or f"data stage '{cfg.data}', {cfg.split} split texts",
        "ppl_window": cfg.ppl_window, "ppl_stride": cfg.ppl_stride or cfg.ppl_window,
        "max_ppl_tokens": cfg.max_ppl_tokens,
        "prompts": len(prompts), "max_new_tokens": cfg.max_new_tokens,
        "split": cfg.split if classify_rows else None, "labels": labels,
        "n": len(classify_rows[1]) if classify_rows else None,
        "timing": (f"batch 1, greedy, exactly {cfg.max_new_tokens} new tokens per prompt (EOS ignored), after "
                   f"{cfg.generation_warmup} warm-up generations; prefill = prompt tokens / time of the prefill "
                   "forward, decode = the new tokens after the first / their time; medians over the prompts"),
        "models": models,
    }


def _run_encoders(cfg: EvaluateConfig, ctx: StageContext, refs: list) -> dict[str, Any]:
    """The classifiers (encoders, ONNX exports) and the baselines on one split."""
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
    for ref in refs:
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

    # a causal reference is the causal models' (see _paired_causal); the classifiers then compare with the first
    ref_is_encoder = cfg.reference is not None and model_ref_str(cfg.reference) in map(model_ref_str, refs)
    reference = _entry_name(cfg.reference) if ref_is_encoder else model_names[0]
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
    return (
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
    """Quality with intervals, speed and size of every model and baseline; per-class results; confusion matrices;
    then the causal LMs: perplexity and speed table, accuracy beside the classifiers, tokens/s against perplexity."""
    if m.get("models"):
        _encoder_section(sid, m, doc)
    if m.get("causal"):
        _causal_section(sid, m, doc)


def _causal_section(sid: str, m: dict, doc: Any) -> None:
    from llmopt.report import plots
    from llmopt.report.render import _ci, _num, _p, _pct

    c = m["causal"]
    doc.h(2, f"Causal language models ({sid})")
    doc.p(f"Perplexity on {c['ppl_corpus']} (first {c['max_ppl_tokens'] or 'all'} tokens, windows of "
          f"{c['ppl_window']} tokens every {c['ppl_stride']}, token-weighted; 95% bootstrap interval over windows). "
          f"Speed: {c['timing']}; {c['prompts']} prompts, {c['threads']} thread(s). Peak RSS: the evaluating "
          "process while loading the model and scoring perplexity."
          + (" A runtime 'transformers (dequantized GGUF)' measures the GGUF's quality only: llama-cpp-python was "
             "not installed, so its speed is not llama.cpp's." if any("dequantized" in e["runtime"]
                                                                       for e in c["models"].values()) else ""))
    head = ["model", "runtime", "perplexity [95% CI]", "tokens scored", "prefill tok/s", "decode tok/s",
            "peak RSS MB", "size MB"]
    rows = [[n, e["runtime"], f"{e['ppl']:.2f} [{e['ppl_ci'][0]:.2f}, {e['ppl_ci'][1]:.2f}]",
             f"{e['perplexity']['tokens_scored']:,}", _num(e["prefill_tok_s"], "{:,.0f}"),
             _num(e["decode_tok_s"], "{:,.1f}"), _num(e["peak_rss_mb"], "{:,.0f}"), _num(e["size_mb"], "{:,.1f}")]
            for n, e in c["models"].items()]
    doc.table(head, rows)
    scored = {n: e["classification"] for n, e in c["models"].items() if e.get("classification")}
    if scored:
        doc.p(f"Classification as instruction on the {c['split']} split (n = {c['n']:,}): loglik = the label whose "
              "answer word is most likely after the chat prompt; generate = a greedy answer parsed to a label, "
              "unparseable answers counted as wrong. Classifiers and baselines of this stage are listed beside.")
        def delta(vs: dict | None) -> str:
            if not vs:
                return ""
            d = vs["accuracy"]
            return (f"{100 * d['diff']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}] vs "
                    f"{vs.get('reference', m.get('reference'))}, {_p(d['p_value'], vs['resamples'])}")

        rows = [[n, f"causal LM, {e['method']}" + (f", {e['unparseable']} unparseable" if e["unparseable"] else ""),
                 _pct(e["accuracy"]) + _ci(e["accuracy_ci"]), _pct(e["macro_f1"]) + _ci(e["macro_f1_ci"]),
                 delta(c["models"][n].get("vs_reference"))] for n, e in scored.items()]
        rows += [[n, f"{e['kind']}, {e['runtime']}", _pct(e["accuracy"]) + _ci(e["accuracy_ci"]),
                  _pct(e["macro_f1"]) + _ci(e["macro_f1_ci"]), delta(e.get("vs_reference"))]
                 for n, e in (m.get("models") or {}).items()]
        doc.table(["model", "kind", "accuracy % [95% CI]", "macro-F1 % [95% CI]",
                   "Δ accuracy, points [95% CI], paired p"], rows)
    doc.figure(f"{sid}-tokens-perplexity.svg", plots.decode_vs_perplexity(c["models"]),
               "Decode tokens/s at batch 1 against perplexity (95% CI); marker area ∝ size on disk.")


def _encoder_section(sid: str, m: dict, doc: Any) -> None:
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
