"""The quantize stage for causal LMs: build each GGUF / torchao output, check its next-token logits against the
parent's on a few texts, and write artifacts/model (+ artifacts/<scheme>/ when several). Contract: gguf_export."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from llmopt.errors import ModelError, RecipeError

ALL_SCHEMES = ("gguf_q4_1", "gguf_q4_0", "gguf_q8_0", "torchao_int8", "torchao_int4")
ENCODER_HINT = "dynamic_int8, static_int8, weight_only_int8/int4 are ONNX Runtime schemes for encoder classifiers"
BUILTIN_TEXTS = [
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman.",
    "To install the package, run pip install followed by the package name.",
    "The mitochondria is the powerhouse of the cell.",
    "def add(a, b):\n    return a + b",
    "In 1969, Neil Armstrong became the first person to walk on the Moon.",
    "Please summarize the following paragraph in one sentence.",
]
MAX_TOKENS = 64  # per check text: the logit check is about the weights, not long context


def _schemes(cfg: Any) -> list[str]:
    if cfg.schemes:
        return list(dict.fromkeys(cfg.schemes))
    if cfg.scheme == "auto":
        return list(ALL_SCHEMES)
    if "scheme" not in cfg.model_fields_set:
        return ["gguf_q4_1"]  # the default for a causal LM: 4-bit, what llama.cpp runs, as the shipped SmolLM2
    if cfg.scheme not in ALL_SCHEMES:
        raise RecipeError(f"quantize '{cfg.id}': scheme {cfg.scheme!r} is for encoder classifiers ({ENCODER_HINT}); "
                          f"the model is a causal LM: use one of {', '.join(ALL_SCHEMES)}, a list schemes: [...], "
                          "or auto.")
    return [cfg.scheme]


def _check_texts(cfg: Any, ctx: Any) -> tuple[list[str], str]:
    from llmopt.fsutil import read_jsonl

    if cfg.data is None:
        return BUILTIN_TEXTS[: cfg.check_texts], "built-in sentences"
    texts = []
    for r in read_jsonl(ctx.artifacts_of(cfg.data) / "dev.jsonl"):
        t = r.get("text") or " ".join(str(r.get(k, "")) for k in ("prompt", "response")).strip()
        if t:
            texts.append(t)
        if len(texts) == cfg.check_texts:
            break
    if not texts:
        raise ModelError(f"{ctx.artifacts_of(cfg.data) / 'dev.jsonl'}: no dev texts to check the quantized model "
                         "against its parent.")
    return texts, f"dev texts of data stage '{cfg.data}'"


def _logits(model: Any, encoded: list[Any]) -> list[Any]:
    import torch

    with torch.no_grad():
        return [model(ids).logits[0].float().numpy() for ids in encoded]


def _compare(got: list[Any], ref: list[Any]) -> dict[str, float]:
    import numpy as np

    diff = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
    scale = max(float(np.abs(r).max()) for r in ref)
    agree = np.concatenate([g.argmax(-1) == r.argmax(-1) for g, r in zip(got, ref)])
    return {"logit_max_abs_diff": diff, "logit_max_abs_diff_rel": diff / scale,
            "top1_agreement": float(agree.mean()), "positions": int(agree.size)}


def _load(folder: Path, meta: dict[str, Any]) -> Any:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from llmopt.compression.gguf_export import gguf_file_of

    prev = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        if meta["format"] == "gguf":
            f = gguf_file_of(folder)
            return AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=f.name, dtype=torch.float32).eval()
        return AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=False).eval()
    finally:
        transformers.logging.set_verbosity(prev)


def build_gguf_folder(src: Path, out: Path, qtype: str, source: str, base_gguf: Path | None) -> dict[str, Any]:
    """A GGUF model folder: model.<qtype>.gguf + the parent's tokenizer files + llmopt_quant.json (temp, then moved)."""
    import os

    from llmopt.compression.gguf_export import CARRIED_FILES, QUANT_FILE, export_gguf
    from llmopt.fsutil import atomic_replace_dir, atomic_write_json

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        info = export_gguf(src, tmp / f"model.{qtype}.gguf", qtype, base_gguf=base_gguf)
        for name in CARRIED_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        meta = {"format": "gguf", "qtype": qtype, "source": source, "file": f"model.{qtype}.gguf",
                "tensor_types": info["tensor_types"], "tokenizer_from": "base GGUF" if base_gguf else "tokenizer.json"}
        atomic_write_json(tmp / QUANT_FILE, meta)
        atomic_replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**meta, "seconds": info["seconds"]}


def _base_gguf(src: Path) -> Path | None:
    """The bundled SmolLM2 GGUF when the model's tokenizer is its tokenizer (its keys are then reused as they are)."""
    from llmopt.compression.gguf_export import tokenizer_matches_gguf
    from llmopt.llm import smollm2_gguf

    try:
        base = smollm2_gguf()
    except ModelError:
        return None
    return base if tokenizer_matches_gguf(src, base) else None


def run_causal(cfg: Any, ctx: Any, src: Path) -> dict[str, Any]:
    """Build every requested causal scheme under a scratch folder, check each, then move them into artifacts/."""
    import torch
    from transformers import AutoTokenizer

    from llmopt import faults
    from llmopt.compression.gguf_export import QUANT_FILE
    from llmopt.fsutil import atomic_replace_dir
    from llmopt.llm import load_causal_lm
    from llmopt.models import display_path, weights_size_bytes
    from llmopt.stages.base import model_ref_str

    schemes = _schemes(cfg)
    keep = cfg.keep or schemes[0]
    if keep not in schemes:
        raise RecipeError(f"quantize '{cfg.id}': keep: {keep} is not among the schemes built ({', '.join(schemes)}).")
    torch.set_num_threads(ctx.threads)
    texts, texts_from = _check_texts(cfg, ctx)
    tok = AutoTokenizer.from_pretrained(str(src))
    encoded = [tok(t, return_tensors="pt", truncation=True, max_length=MAX_TOKENS).input_ids for t in texts]
    ref = _logits(load_causal_lm(src, allow_pickle=ctx.allow_pickle), encoded)
    source = model_ref_str(cfg.model)
    base = _base_gguf(src) if any(s.startswith("gguf_") for s in schemes) else None
    work = ctx.stage_dir / ".work.tmp"  # scratch: dot-named, never taken for a result, swept after a crash
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        outputs = _build_all(cfg, ctx, src, schemes, source, base, encoded, ref, work)
        ok = [s for s in schemes if "error" not in outputs[s]]
        if keep not in ok:
            raise ModelError(f"quantize '{cfg.id}': the kept scheme {keep} failed: {outputs[keep]['error']}")
        faults.point("quantize.write")
        out = ctx.out_dir
        if len(schemes) > 1:
            for s in ok:
                tmp = out / f".{s}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(work / s, tmp)
                atomic_replace_dir(tmp, out / s)
        atomic_replace_dir(work / keep, out / "model")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert (out / "model" / QUANT_FILE).is_file()
    parent_bytes = weights_size_bytes(src)
    kept = outputs[keep]
    return {
        "kind": "causal_lm",
        "parent": source,
        "parent_display": display_path(src),
        "scheme": keep,
        "schemes": schemes,
        "choice": "the recipe's keep:" if cfg.keep else ("the only scheme" if len(schemes) == 1 else "the first scheme"),
        "runtime": kept["runtime"],
        "parent_weights_bytes": parent_bytes,
        "weights_bytes": kept["weights_bytes"],
        "size_ratio_vs_parent": parent_bytes / kept["weights_bytes"],
        "top1_agreement": kept["top1_agreement"],
        "logit_max_abs_diff": kept["logit_max_abs_diff"],
        "check_texts": len(texts),
        "check_texts_from": texts_from,
        "outputs": {s: ({**r, "size_ratio_vs_parent": parent_bytes / r["weights_bytes"]} if "error" not in r else r)
                    for s, r in outputs.items()},
    }


def _build_all(cfg: Any, ctx: Any, src: Path, schemes: list[str], source: str, base: Path | None,
               encoded: list[Any], ref: list[Any], work: Path) -> dict[str, dict[str, Any]]:
    """Each scheme into work/<scheme>, checked against the parent's logits; a failure is kept with its reason when
    several schemes were asked for, raised when one was."""
    from llmopt.compression.gguf_export import read_quant_meta
    from llmopt.compression.torchao_quant import measure_runtime, quantize_torchao, write_runtime
    from llmopt.fsutil import dir_size_bytes
    from llmopt.models import weights_size_bytes

    outputs: dict[str, dict[str, Any]] = {}
    for s in schemes:
        t0 = time.perf_counter()
        folder = work / s
        try:
            if s.startswith("gguf_"):
                built = build_gguf_folder(src, folder, s.removeprefix("gguf_").upper(), source, base)
                runtime = "llama.cpp / transformers gguf_file"
            else:
                built = quantize_torchao(src, folder, s, source)
                runtime = "transformers + torchao"
                if cfg.runtime == "measure":
                    rt = measure_runtime(folder, ctx.threads)
                    write_runtime(folder, rt)
                    built["runtime_measured"] = rt
        except ModelError as e:
            if len(schemes) == 1:
                raise
            outputs[s] = {"error": str(e)}
            continue
        res = _compare(_logits(_load(folder, read_quant_meta(folder)), encoded), ref)
        weights = (weights_size_bytes(next(folder.glob("*.gguf"))) if s.startswith("gguf_")
                   else weights_size_bytes(folder))
        outputs[s] = {**built, **res, "runtime": runtime, "weights_bytes": weights,
                      "folder_bytes": dir_size_bytes(folder), "seconds": round(time.perf_counter() - t0, 2)}
    return outputs


def causal_section(sid: str, m: dict, doc: Any) -> None:
    """Every causal output: size, ratio, logit agreement with the parent, runtime advice; failures with reasons."""
    from llmopt.report.render import _pct, short_path

    doc.h(2, f"Quantization ({sid})")
    doc.p(f"Causal LM {short_path(m.get('parent_display', m['parent']))} "
          f"({m['parent_weights_bytes'] / 2**20:.1f} MB of weights). Kept in model/: {m['scheme']} ({m['choice']}), "
          f"{m['weights_bytes'] / 2**20:.1f} MB, {m['size_ratio_vs_parent']:.1f}× smaller; its top-1 next token "
          f"equals the parent's at {_pct(m['top1_agreement'])}% of positions on {m['check_texts']} "
          f"{m['check_texts_from']}.")
    rows = []
    for s, r in m["outputs"].items():
        if "error" in r:
            rows.append([s, "not built: " + r["error"][:160], "", "", "", ""])
            continue
        rt = r.get("runtime_measured")
        advice = (("compile + static cache" if rt["compile"] else "static cache" if rt["static_cache"] else "eager")
                  + f" ({max(rt['decode_tok_s'].values()):.1f} tok/s)") if rt else ""
        rows.append([s, f"{r['weights_bytes'] / 2**20:.1f}", f"{r['size_ratio_vs_parent']:.1f}×",
                     _pct(r["top1_agreement"]), f"{r['logit_max_abs_diff']:.3g}", advice or r["runtime"]])
    doc.table(["scheme", "weights MB", "smaller by", "top-1 agreement %", "max |Δlogit|", "runtime"], rows)
