"""torchao weight-only quantization of a causal LM (int8; int4 where torchao has a CPU kernel), saved as a
transformers folder with `quantization_config` and the quantized tensors in safetensors, plus a measured runtime
recommendation (torch.compile, static KV cache) in llmopt_runtime.json. Folder contract: gguf_export's docstring."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from llmopt.errors import ModelError

TORCHAO_SCHEMES = {"torchao_int8": "int8_weight_only", "torchao_int4": "int4_weight_only"}
INT4_GROUP = 32


def _config(scheme: str, fmt: str = "plain") -> Any:
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if scheme == "torchao_int8":
        return Int8WeightOnlyConfig()
    return Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format=fmt)


def int4_cpu_support() -> tuple[str | None, str]:
    """(packing format that runs, '') when torchao's Int4WeightOnlyConfig runs a Linear on this CPU, else
    (None, why): each packing format is tried on a 64×64 Linear and its error kept."""
    import torch
    from torchao.quantization import quantize_

    errors = []
    for fmt, dtype in (("plain", torch.float32), ("tile_packed_to_4d", torch.bfloat16),
                       ("plain_int32", torch.float32)):
        lin = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False)).to(dtype)
        try:
            quantize_(lin, _config("torchao_int4", fmt))
            with torch.no_grad():
                lin(torch.randn(2, 64, dtype=dtype))
            return fmt, ""
        except Exception as e:  # torchao raises ImportError/AssertionError/NotImplementedError per format
            errors.append(f"{fmt}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    import torchao

    return None, (f"torchao {torchao.__version__}'s Int4WeightOnlyConfig has no kernel that runs on this CPU ("
                  + "; ".join(errors) + "). Use torchao_int8, or a 4-bit GGUF (gguf_q4_0 / gguf_q4_1).")


def quantize_torchao(model_dir: Path, out_dir: Path, scheme: str, source: str) -> dict[str, Any]:
    """Load `model_dir` quantized by transformers' TorchAoConfig, save it (quantized tensors in safetensors) with the
    tokenizer and llmopt_quant.json into a temp folder, then move it to `out_dir`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, TorchAoConfig

    from llmopt.compression.gguf_export import CARRIED_FILES, QUANT_FILE
    from llmopt.fsutil import atomic_replace_dir, atomic_write_json

    if scheme not in TORCHAO_SCHEMES:
        raise ModelError(f"unknown torchao scheme {scheme!r}; choose one of {', '.join(TORCHAO_SCHEMES)}.")
    fmt = None
    if scheme == "torchao_int4":
        fmt, why = int4_cpu_support()
        if fmt is None:
            raise ModelError(why)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if fmt == "tile_packed_to_4d" else torch.float32
    prev = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), quantization_config=TorchAoConfig(quant_type=_config(scheme, fmt or "plain")),
            dtype=dtype, trust_remote_code=False, use_safetensors=True).eval()
    finally:
        transformers.logging.set_verbosity(prev)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    kinds = sorted({type(m.weight).__name__ for m in linears})
    quantized = sum(type(m.weight).__name__ not in ("Parameter", "Tensor") for m in linears)
    if not quantized:
        raise ModelError(f"{model_dir}: torchao quantized no Linear layer ({scheme}).")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        for name in CARRIED_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        meta = {"format": "torchao", "scheme": TORCHAO_SCHEMES[scheme], "source": source,
                "serialization": "quantized tensors in safetensors (transformers TorchAoConfig)",
                "dtype": str(dtype).removeprefix("torch."), "linear_weight_types": kinds,
                "quantized_linears": quantized, "linears": len(linears)}
        if fmt:
            meta.update(group_size=INT4_GROUP, packing_format=fmt)
        atomic_write_json(tmp / QUANT_FILE, meta)
        atomic_replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**meta, "seconds": round(time.perf_counter() - t0, 2)}


def _decode_rate(model: Any, ids: Any, new_tokens: int, static: bool, repeats: int) -> list[float]:
    import torch

    kw: dict[str, Any] = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if static:
        kw["cache_implementation"] = "static"
    rates = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            model.generate(ids, **kw)
            rates.append(new_tokens / (time.perf_counter() - t))
    return rates


def measure_runtime(model_dir: Path, threads: int, new_tokens: int = 16, repeats: int = 3,
                    try_compile: bool = True) -> dict[str, Any]:
    """Greedy decode tokens/s of the folder's model in eager mode, with a static KV cache, and with torch.compile
    plus the static cache (after one warm-up generate each, which for compile includes compiling); a variant is
    recommended only when its median beats eager's by ≥ 5%."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    prev = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), trust_remote_code=False).eval()
        ids = tok("The history of the city begins with", return_tensors="pt").input_ids
        res: dict[str, Any] = {}
        for name, static in (("eager", False), ("static_cache", True)):
            _decode_rate(model, ids, new_tokens, static, 1)
            res[name] = statistics.median(_decode_rate(model, ids, new_tokens, static, repeats))
        if try_compile:
            try:
                from llmopt.llm import compile_decode

                compile_decode(model, max_cache_len=ids.shape[1] + new_tokens + 16)
                t = time.perf_counter()
                _decode_rate(model, ids, new_tokens, True, 1)
                res["compile_warmup_s"] = round(time.perf_counter() - t, 1)
                res["compile_static_cache"] = statistics.median(_decode_rate(model, ids, new_tokens, True, repeats))
            except Exception as e:  # inductor needs a C++ compiler; say why instead of failing the stage
                res["compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    finally:
        transformers.logging.set_verbosity(prev)
    best = max((k for k in ("eager", "static_cache", "compile_static_cache") if k in res), key=lambda k: res[k])
    if res[best] < 1.05 * res["eager"]:
        best = "eager"
    return {"compile": best == "compile_static_cache", "static_cache": best != "eager",
            "decode_tok_s": {k: round(v, 2) for k, v in res.items() if k in ("eager", "static_cache",
                                                                                 "compile_static_cache")},
            **{k: v for k, v in res.items() if k in ("compile_warmup_s", "compile_error")},
            "threads": threads, "new_tokens": new_tokens, "repeats": repeats,
            "measured": "greedy generate of new_tokens after one warm-up; median tokens/s (includes the short prefill)"}


def write_runtime(folder: Path, runtime: dict[str, Any]) -> None:
    """llmopt_runtime.json: {"compile": bool, "static_cache": bool, ...the measurements}."""
    from llmopt.compression.gguf_export import RUNTIME_FILE
    from llmopt.fsutil import atomic_write_json

    atomic_write_json(Path(folder) / RUNTIME_FILE, runtime)


def read_runtime(folder: Path) -> dict[str, Any]:
    """The folder's runtime recommendation; eager without a static cache when there is none."""
    from llmopt.compression.gguf_export import RUNTIME_FILE

    p = Path(folder) / RUNTIME_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {"compile": False, "static_cache": False}
