"""quantize stage: export to ONNX, fuse for ONNX Runtime, quantize; the scheme is chosen by measured CPU speed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmopt.stages.base import StageConfig, StageContext, StageResult

Scheme = Literal["fp32", "dynamic_int8", "static_int8", "weight_only_int8", "weight_only_int4"]


class QuantizeConfig(StageConfig):
    """ONNX Runtime model of an earlier stage's model: fp32, int8 (dynamic/static) or weight-only int8/int4."""

    type: Literal["quantize"] = "quantize"
    model: str = Field(description="earlier stage id or model folder (safetensors)")
    data: str = Field("data", description="data stage: dev rows calibrate static int8 and check agreement")
    scheme: Scheme | Literal["auto"] = Field("dynamic_int8", description="auto: fastest of `candidates` that agrees")
    candidates: list[Scheme] = ["dynamic_int8", "static_int8", "weight_only_int8"]
    optimize: bool = Field(True, description="fuse attention/LayerNorm/GELU with ORT's transformer optimizer")
    max_length: int = Field(128, ge=8)
    calibration_rows: int = Field(128, ge=1)
    check_rows: int = Field(200, ge=10, description="dev rows compared with the fp32 export")
    min_agreement: float = Field(0.98, ge=0, le=1, description="auto: least share of dev predictions equal to fp32")
    latency_runs: int = Field(100, ge=10, description="auto: batch-1 runs timing each candidate")

    def model_refs(self) -> list[str]:
        return [self.model]


def _check(pred: Any, ref_probs: Any, texts: list[str]) -> dict[str, float]:
    import numpy as np

    from llmopt.eval.predictors import predict_all

    probs = predict_all(pred, texts)
    return {"agreement_with_fp32": float(np.mean(probs.argmax(1) == ref_probs.argmax(1))),
            "max_abs_prob_diff": float(np.abs(probs - ref_probs).max())}


def run(cfg: QuantizeConfig, ctx: StageContext) -> StageResult:
    import shutil

    from llmopt.compression.onnx_export import export_fp32, optimize, quantize, write_meta
    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval.predictors import OrtClassifier, predict_all
    from llmopt.eval.speed import measure_speed
    from llmopt.fsutil import atomic_replace_dir
    from llmopt.models import load_tokenizer, weights_size_bytes

    src = ctx.model_dir(cfg.model)
    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    dev = [r["text"] for r in data.dev]
    check, calib = dev[: cfg.check_rows], dev[: cfg.calibration_rows]
    work = ctx.stage_dir / ".work.tmp"  # scratch: dot-named, so never taken for a result and swept after a crash
    shutil.rmtree(work, ignore_errors=True)
    meta = export_fp32(src, work / "fp32", allow_pickle=ctx.allow_pickle)
    shutil.copyfile(work / "fp32" / "model.onnx", work / "unfused.onnx")  # static int8 calibrates this one
    fused = optimize(work / "fp32" / "model.onnx", meta) if cfg.optimize else False
    tok = load_tokenizer(src)
    fp32_probs = predict_all(OrtClassifier(work / "fp32", cfg.max_length, ctx.threads), check)

    schemes = list(dict.fromkeys(cfg.candidates)) if cfg.scheme == "auto" else [cfg.scheme]
    tried: dict[str, dict[str, Any]] = {}
    for scheme in schemes:
        folder = work / scheme
        if scheme != "fp32":
            shutil.copytree(work / "fp32", folder, ignore=shutil.ignore_patterns("model.onnx"))
        try:
            if scheme != "fp32":
                base = work / ("unfused.onnx" if scheme == "static_int8" else "fp32/model.onnx")
                quantize(base, folder / "model.onnx", scheme, meta, tok, calib, cfg.max_length)
        except Exception as e:  # noqa: BLE001 - one failing scheme must not sink `auto`; it is reported
            tried[scheme] = {"error": f"{type(e).__name__}: {e}"}
            continue
        write_meta(folder, {**meta, "scheme": scheme, "fused": fused, "source": str(src)})
        pred = OrtClassifier(folder, cfg.max_length, ctx.threads)
        res = {**_check(pred, fp32_probs, check), "size_bytes": weights_size_bytes(folder / "model.onnx")}
        if cfg.scheme == "auto":
            res.update(measure_speed(pred.predict_proba, texts=check, threads=ctx.threads, warmup=10,
                                     latency_runs=cfg.latency_runs, throughput_batches=3))
        tried[scheme] = res

    ok = {s: r for s, r in tried.items() if "error" not in r}
    if not ok:
        from llmopt.errors import ModelError

        raise ModelError(f"quantize '{cfg.id}': every scheme failed: {tried}. Try scheme: dynamic_int8.")
    if cfg.scheme == "auto":
        agreeing = {s: r for s, r in ok.items() if r["agreement_with_fp32"] >= cfg.min_agreement} or ok
        chosen = min(agreeing, key=lambda s: agreeing[s]["latency_b1_p50_ms"])
    else:
        chosen = schemes[0]
    tmp = ctx.out_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(work / chosen, tmp)
    from llmopt import faults

    faults.point("quantize.write")
    atomic_replace_dir(tmp, ctx.out_dir / "model")
    parent_bytes = weights_size_bytes(src)
    shutil.rmtree(work, ignore_errors=True)
    return StageResult({
        "parent": cfg.model,
        "scheme": chosen,
        "runtime": f"onnxruntime-{chosen}",
        "fused_for_ort": fused,
        "params": meta["params"],
        "parent_weights_bytes": parent_bytes,
        "weights_bytes": ok[chosen]["size_bytes"],
        "size_ratio_vs_parent": parent_bytes / ok[chosen]["size_bytes"],
        "agreement_with_fp32": ok[chosen]["agreement_with_fp32"],
        "check_rows": len(check),
        "candidates": tried,
    })
