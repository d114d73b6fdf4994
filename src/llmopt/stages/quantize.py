"""quantize stage: an encoder classifier → ONNX Runtime (fp32, int8, weight-only; `auto` keeps the fastest scheme that
agrees); a causal LM → GGUF (Q8_0, Q4_0, Q4_1) and/or torchao weight-only (int8, int4) transformers folders.

Causal LMs: `scheme:` one of CAUSAL_SCHEMES, or `schemes: [...]`, or `scheme: auto` (every causal scheme; those that
cannot run here are reported with their reason). With several, each is kept in artifacts/<scheme>/ and the one
named by `keep:` (else the first listed) also in artifacts/model; with one, only artifacts/model. Folder contract:
llmopt.compression.gguf_export. Each output is checked against the parent on a few texts (the data stage's dev
texts when `data` names one, else built-in sentences; `data: null` for a recipe without a data stage).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmopt.compression.schemes import SCHEMES, Scheme
from llmopt.stages.base import ModelRef, StageConfig, StageContext, StageRef, StageResult, model_ref_str

CausalScheme = Literal["gguf_q8_0", "gguf_q4_0", "gguf_q4_1", "torchao_int8", "torchao_int4"]
CAUSAL_SCHEMES: tuple[str, ...] = ("gguf_q4_1", "gguf_q4_0", "gguf_q8_0", "torchao_int8", "torchao_int4")


class QuantizeConfig(StageConfig):
    """ONNX Runtime model of an earlier stage's model: fp32, int8 (dynamic/static) or weight-only int8/int4."""

    type: Literal["quantize"] = "quantize"
    model: ModelRef = Field(description="earlier stage id or model folder (safetensors)")
    data: StageRef | None = Field("data", description="data stage: dev rows calibrate static int8 and check "
                                  "agreement (causal LMs: dev texts for the logit check; null: built-in sentences)")
    scheme: Scheme | CausalScheme | Literal["auto"] = Field(
        "dynamic_int8", description="auto: fastest of `candidates` that agrees (causal LM: every causal scheme)")
    schemes: list[CausalScheme] | None = Field(None, min_length=1, description="causal LM: build each of these")
    keep: CausalScheme | None = Field(None, description="causal LM: the output copied to artifacts/model "
                                      "(default: the first scheme)")
    check_texts: int = Field(8, ge=1, description="causal LM: texts whose next-token logits are compared")
    runtime: Literal["measure", "eager"] = Field(
        "measure", description="torchao outputs: time eager / static KV cache / torch.compile decoding and record "
        "the fastest in llmopt_runtime.json; eager: skip the timing")
    candidates: list[Scheme] = ["dynamic_int8", "static_int8", "weight_only_int8"]
    optimize: bool = Field(True, description="fuse attention/LayerNorm/GELU with ORT's transformer optimizer")
    max_length: int | None = Field(None, ge=8, description="tokens per text; null: the model's training setting "
                                   "(llmopt_inference.json), else 128; truncation is always the model's own")
    calibration_rows: int = Field(128, ge=1)
    check_rows: int = Field(200, ge=10, description="dev rows compared with the fp32 export")
    min_agreement: float = Field(0.98, ge=0, le=1, description="auto: least share of dev predictions equal to fp32")
    latency_runs: int = Field(100, ge=10, description="auto: batch-1 runs timing each candidate")
    latency_threads: list[int] = Field([], description="encoders: also time the kept model at batch 1 with each of "
                                       "these ONNX Runtime intra-op thread counts (e.g. [1, 2]; reported)")
    profile: bool = Field(False, description="encoders: run ONNX Runtime's profiler on batch-1 calls of the kept "
                          "model and report the operator types that take the time")


def _check(pred: Any, ref_probs: Any, texts: list[str]) -> dict[str, float]:
    import numpy as np

    from llmopt.eval.predictors import predict_all

    probs = predict_all(pred, texts)
    return {"agreement_with_fp32": float(np.mean(probs.argmax(1) == ref_probs.argmax(1))),
            "max_abs_prob_diff": float(np.abs(probs - ref_probs).max())}


def run(cfg: QuantizeConfig, ctx: StageContext) -> StageResult:
    """Export `cfg.model` to ONNX once, write each scheme (one, or every candidate for `auto`), check each against
    the fp32 export on dev, and move the kept one to artifacts/model."""
    import shutil

    from llmopt import faults
    from llmopt.compression.onnx_export import export_variants, read_meta
    from llmopt.data.artifact import load_data_artifact
    from llmopt.errors import ModelError
    from llmopt.eval.predictors import OrtClassifier, predict_all
    from llmopt.eval.speed import compare_latency, measure_speed
    from llmopt.fsutil import atomic_replace_dir
    from llmopt.models import inference_settings, weights_size_bytes

    from llmopt.errors import RecipeError
    from llmopt.llm import is_causal_lm

    src = ctx.model_dir(cfg.model)
    if is_causal_lm(src):
        from llmopt.compression.causal_quantize import run_causal

        return StageResult(run_causal(cfg, ctx, src))
    if cfg.schemes or cfg.scheme in CAUSAL_SCHEMES:
        raise RecipeError(f"quantize '{cfg.id}': {cfg.schemes or cfg.scheme} are causal-LM schemes (GGUF, torchao), "
                          f"but {src} is not a causal LM. For an encoder use scheme: one of {', '.join(SCHEMES)} "
                          "or auto.")
    if cfg.data is None:
        raise RecipeError(f"quantize '{cfg.id}': an encoder needs a data stage (data:) to calibrate and check.")
    max_length, truncation = inference_settings(src, cfg.max_length)
    dev = load_data_artifact(ctx.artifacts_of(cfg.data)).texts("dev")
    check = dev[: cfg.check_rows]
    work = ctx.stage_dir / ".work.tmp"  # scratch: dot-named, so never taken for a result and swept after a crash
    shutil.rmtree(work, ignore_errors=True)
    auto = cfg.scheme == "auto"
    schemes = list(dict.fromkeys(["fp32", *(cfg.candidates if auto else [cfg.scheme])]))
    built = export_variants(src, work, schemes, calibration=dev[: cfg.calibration_rows], max_length=max_length,
                            truncation=truncation, fuse=cfg.optimize, allow_pickle=ctx.allow_pickle)
    if isinstance(built["fp32"], str):
        raise ModelError(f"quantize '{cfg.id}': the ONNX export of {src} failed: {built['fp32']}")
    fp32_pred = OrtClassifier(built["fp32"], max_length, ctx.threads, truncation)
    fp32_probs = predict_all(fp32_pred, check)

    tried: dict[str, dict[str, Any]] = {}
    for scheme in (cfg.candidates if auto else [cfg.scheme]):
        folder = built[scheme]
        if isinstance(folder, str):
            tried[scheme] = {"error": folder}
            continue
        pred = OrtClassifier(folder, max_length, ctx.threads, truncation)
        res = {**_check(pred, fp32_probs, check), "size_bytes": weights_size_bytes(folder / "model.onnx")}
        if auto:
            res.update(measure_speed(pred.predict_proba, texts=check, threads=ctx.threads, warmup=10,
                                     latency_runs=cfg.latency_runs, throughput_batches=3))
            # every candidate against the same fp32 export, timed paired (both alive, ABBA blocks): the choice
            # rests on ratios with intervals, not on p50s taken minutes apart
            paired = compare_latency(child=pred.predict_proba, parent=fp32_pred.predict_proba, texts=check,
                                     threads=ctx.threads, runs=cfg.latency_runs, warmup=5, seed=ctx.seed)
            res.update(latency_ratio_vs_fp32=paired["ratio"], latency_ratio_vs_fp32_ci=paired["ratio_ci"])
        tried[scheme] = res

    ok = {s: r for s, r in tried.items() if "error" not in r}
    if not ok:
        raise ModelError(f"quantize '{cfg.id}': every scheme failed: {tried}. Try scheme: dynamic_int8.")
    if auto:
        agreeing = {s: r for s, r in ok.items() if r["agreement_with_fp32"] >= cfg.min_agreement}
        pool = agreeing or ok
        chosen = min(pool, key=lambda s: (pool[s]["latency_ratio_vs_fp32"], pool[s]["size_bytes"]))
        why = (f"fastest at batch 1 (paired latency ratio against the fp32 export) of the schemes whose dev predictions agree with fp32 on ≥ "
               f"{100 * cfg.min_agreement:.0f}% of {len(check)} rows" if agreeing else
               f"no scheme reached {100 * cfg.min_agreement:.0f}% agreement with fp32; kept the fastest anyway")
    else:
        chosen, why = cfg.scheme, "the recipe's scheme"
    tmp = ctx.out_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(built[chosen], tmp)
    faults.point("quantize.write")
    atomic_replace_dir(tmp, ctx.out_dir / "model")
    parent_bytes = weights_size_bytes(src)
    meta = read_meta(ctx.out_dir / "model")
    shutil.rmtree(work, ignore_errors=True)
    by_threads, profile = {}, None
    for t in dict.fromkeys(cfg.latency_threads):
        kept = OrtClassifier(ctx.out_dir / "model", max_length, t, truncation)
        by_threads[str(t)] = measure_speed(kept.predict_proba, texts=check, threads=t, warmup=10,
                                           latency_runs=cfg.latency_runs, throughput_batches=1)["latency_b1_p50_ms"]
    if cfg.profile:
        from llmopt.compression.onnx_export import profile_ops

        profile = profile_ops(ctx.out_dir / "model", check, threads=ctx.threads, runs=cfg.latency_runs,
                              max_length=max_length, work=ctx.stage_dir)[:12]
    return StageResult({
        "parent": model_ref_str(cfg.model),
        "scheme": chosen,
        "choice": why,
        "runtime": f"onnxruntime-{chosen}",
        "fused_for_ort": meta.get("fused"),
        "fused_ops": meta.get("fused_ops"),
        "op_types": meta.get("op_types"),
        "latency_b1_p50_ms_by_threads": by_threads or None,
        "profile": profile,
        "params": meta["params"],
        "parent_weights_bytes": parent_bytes,
        "fp32_onnx_bytes": weights_size_bytes(built["fp32"] / "model.onnx"),
        "weights_bytes": ok[chosen]["size_bytes"],
        "size_ratio_vs_parent": parent_bytes / ok[chosen]["size_bytes"],
        "agreement_with_fp32": ok[chosen]["agreement_with_fp32"],
        "check_rows": len(check),
        "max_length": max_length,
        "truncation": truncation,
        "candidates": tried,
    })


def section(sid: str, m: dict, doc: Any) -> None:
    """The scheme kept and why, with every candidate measured."""
    from llmopt.report.render import _num, _pct, short_path

    if m.get("kind") == "causal_lm":
        from llmopt.compression.causal_quantize import causal_section

        return causal_section(sid, m, doc)

    doc.h(2, f"Quantization ({sid})")
    auto = len(m["candidates"]) > 1 or any("latency_b1_p50_ms" in r for r in m["candidates"].values())
    doc.p(f"ONNX Runtime export of {short_path(m['parent'])} ({m['params']:,} parameters"
          f"{', fused for ORT' if m.get('fused_for_ort') else ''}). Kept: {m['scheme']} — {m.get('choice', '')}. "
          f"Weights {m['weights_bytes'] / 2**20:.2f} MB, {m['size_ratio_vs_parent']:.1f}× smaller than the parent; "
          f"{_pct(m['agreement_with_fp32'])}% of {m['check_rows']} dev predictions equal the fp32 export's.")
    doc.p(f"scheme: auto built and measured every candidate below on dev and kept the fastest that agrees with fp32."
          if auto else f"Only the recipe's scheme ({m['scheme']}) was built; scheme: auto builds every candidate "
          "(dynamic int8, static int8, weight-only int8), times each and keeps the fastest that agrees with fp32.")
    if m.get("fused_ops"):
        doc.p("Fused for ONNX Runtime: " + ", ".join(f"{v} × {k}" for k, v in m["fused_ops"].items()) + ".")
    if m.get("latency_b1_p50_ms_by_threads"):
        doc.p("Kept model, batch-1 p50 by intra-op threads: " + ", ".join(
            f"{t} thread{'s' * (t != '1')}: {v:.3f} ms" for t, v in m["latency_b1_p50_ms_by_threads"].items()) + ".")
    if m.get("profile"):
        top = ", ".join(f"{p['op']} {100 * p['share']:.0f}% ({p['us_per_call']:.0f} µs)" for p in m["profile"][:6])
        doc.p(f"Where a batch-1 call spends its time (ONNX Runtime profiler, kernel time by operator type): {top}.")
    kept = m["candidates"].get(m["scheme"], {})

    def verdict(s: str, r: dict) -> str:
        if s == m["scheme"]:
            return "kept"
        speed = "latency_ratio_vs_fp32" if "latency_ratio_vs_fp32" in r else "latency_b1_p50_ms"
        if r.get(speed) is not None and r[speed] >= kept.get(speed, 0):
            return "not kept: slower"
        return "not kept: agrees less with fp32" if auto else "not kept"

    rows = []
    for s, r in m["candidates"].items():
        if "error" in r:
            rows.append([s, "failed: " + r["error"][:120], "", "", "", ""])
        else:
            ci = r.get("latency_ratio_vs_fp32_ci")
            ratio = (f"{r['latency_ratio_vs_fp32']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
                     if r.get("latency_ratio_vs_fp32") is not None and ci else "—")
            rows.append([s, f"{r['size_bytes'] / 2**20:.2f}", _pct(r["agreement_with_fp32"]),
                         _num(r.get("latency_b1_p50_ms")), ratio, verdict(s, r)])
    doc.table(["scheme", "weights MB", f"agreement with fp32 % ({m['check_rows']} dev rows)", "batch-1 p50 ms",
               "latency ÷ fp32 [95% CI], paired", ""], rows)
