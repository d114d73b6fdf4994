"""GGUF export of a Llama-family causal LM (Q8_0, Q4_0, Q4_1, F16, F32) with the `gguf` library, and llama.cpp's
own quantizer where `llama-cpp-python` is installed.

Contract of a causal `quantize` output folder (artifacts/model, and artifacts/<scheme>/ for every scheme built),
which the causal evaluator reads: it is EITHER (a) a GGUF folder — exactly one `*.gguf` file, `llmopt_quant.json`
`{"format": "gguf", "qtype": "Q4_1", "source": "<parent ref>", "file": "<name>.gguf"}`, and the parent's tokenizer
files (tokenizer.json, tokenizer_config.json, chat template …) so the folder tokenizes without reading the GGUF;
there is no config.json or safetensors, so it is loaded by `AutoModelForCausalLM.from_pretrained(folder,
gguf_file=name)` or `llama_cpp.Llama(folder/name)`, never by a plain `from_pretrained` — OR (b) a transformers
folder (config.json with or without `quantization_config`, safetensors, tokenizer) plus `llmopt_quant.json`
`{"format": "torchao", "scheme": "int8_weight_only", ...}` and an optional `llmopt_runtime.json`
`{"compile": bool, "static_cache": bool}` saying how to run it fastest here. `read_quant_meta(folder)` returns the
`llmopt_quant.json` of either kind (None for a plain model folder).

The export mirrors llama.cpp's converter: norms stay F32, q_proj/k_proj rows are permuted the way
convert_hf_to_gguf.py does (transformers un-permutes them on load), the token embedding is Q8_0 in the 4-bit files
(as in the shipped SmolLM2 Q4_1 file), and the tokenizer keys are copied from a base GGUF when the model's
tokenizer is that GGUF's, else built from tokenizer.json (BPE "gpt2" model).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from llmopt.errors import ModelError

QUANT_FILE = "llmopt_quant.json"
RUNTIME_FILE = "llmopt_runtime.json"
GGUF_QTYPES = ("Q8_0", "Q4_0", "Q4_1", "F16", "F32")
LLAMA_ARCHS = ("LlamaForCausalLM",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model")
# what a quantized folder carries over from its parent besides the tokenizer: the SFT instruction it answers to
CARRIED_FILES = (*TOKENIZER_FILES, "llmopt_instruction.json")
_FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}  # llama_ftype (gguf.LlamaFileType)


def read_quant_meta(folder: Path) -> dict[str, Any] | None:
    """The folder's llmopt_quant.json ({"format": "gguf" | "torchao", ...}), or None for a plain model folder."""
    p = Path(folder) / QUANT_FILE
    if not p.is_file():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def gguf_file_of(folder: Path) -> Path:
    """The one *.gguf file of a GGUF model folder."""
    found = sorted(Path(folder).glob("*.gguf"))
    if len(found) != 1:
        raise ModelError(f"{folder}: expected exactly one *.gguf file, found {len(found)}.")
    return found[0]


def _config(model_dir: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{model_dir / 'config.json'}: cannot read the model config ({e}).") from None
    archs = cfg.get("architectures") or [cfg.get("model_type", "?")]
    if not any(a in LLAMA_ARCHS for a in archs) or cfg.get("model_type") != "llama":
        raise ModelError(f"{model_dir}: GGUF export supports the Llama architecture only (LlamaForCausalLM, as "
                         f"SmolLM2); this model is {', '.join(map(str, archs))}. Use scheme torchao_int8 instead.")
    return cfg


def _state_dict(model_dir: Path) -> dict[str, Any]:
    """Every tensor of the folder's safetensors files as float32 numpy arrays."""
    import torch
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{model_dir}: no *.safetensors weights; GGUF export reads safetensors only.")
    out = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                out[k] = st.get_tensor(k).to(torch.float32).numpy()
    return out


def permute_qk(w: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """llama.cpp's q/k row permutation (convert_hf_to_gguf.py LlamaModel.permute): HF's rotate-half layout → the
    interleaved pairs llama.cpp's RoPE expects. transformers' LlamaTensorProcessor applies the inverse on load."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def _tensor_type(gname: str, arr: Any, qtype: str) -> str:
    """Norms (1-D) stay F32; token embedding / output head Q8_0 in quantized files; rows not a multiple of the
    32-value block fall back to F16, as llama.cpp's quantizer does."""
    if arr.ndim == 1 or qtype == "F32":
        return "F32"
    if qtype == "F16":
        return "F16"
    if gname in ("token_embd.weight", "output.weight"):
        return "Q8_0"
    return qtype if arr.shape[-1] % 32 == 0 else "F16"


def _encode(arr: Any, ttype: str) -> tuple[Any, Any]:
    import gguf
    import numpy as np

    if ttype == "F32":
        return arr.astype(np.float32), None
    if ttype == "F16":
        return arr.astype(np.float16), None
    q = gguf.GGMLQuantizationType[ttype]
    return gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), q), q


def _copy_tokenizer_keys(writer: Any, base_gguf: Path) -> None:
    for key, value, vtype, sub in _gguf_tokenizer_keys(str(base_gguf), base_gguf.stat().st_mtime_ns):
        writer.add_key_value(key, value, vtype, sub)


@functools.lru_cache(maxsize=4)
def _gguf_tokenizer_keys(path: str, mtime_ns: int) -> tuple[tuple[str, Any, Any, Any], ...]:
    """A GGUF's tokenizer.* keys as (key, value, type, array item type); GGUFReader spends seconds parsing 49k
    token strings, so each file version is read once."""
    import gguf

    out = []
    for key, field in gguf.GGUFReader(path).fields.items():
        if key.startswith("tokenizer."):
            vtype = field.types[0]
            out.append((key, field.contents(), vtype, field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None))
    return tuple(out)


def _tokenizer_keys_from_hf(writer: Any, model_dir: Path) -> None:
    """BPE ("gpt2") vocabulary from tokenizer.json: tokens by id, token types, merges, special ids, chat template."""
    import gguf

    from llmopt.models import load_tokenizer

    tj = model_dir / "tokenizer.json"
    if not tj.is_file():
        raise ModelError(f"{model_dir}: no tokenizer.json; GGUF export needs the tokenizer beside the model.")
    data = json.loads(tj.read_text(encoding="utf-8"))
    if (data.get("model") or {}).get("type") != "BPE":
        raise ModelError(f"{tj}: GGUF export writes byte-level BPE tokenizers only; this one is "
                         f"{(data.get('model') or {}).get('type')!r}.")
    tok = load_tokenizer(model_dir)
    vocab = tok.get_vocab()
    n = max(vocab.values()) + 1
    by_id = {i: t for t, i in vocab.items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(n):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")  # llama.cpp's hash-named pre-tokenizers are not derivable here
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n)
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:  # what the tokenizer does, when its config does not say
        ids = tok("a").input_ids
        writer.add_add_bos_token(bool(ids) and ids[0] == tok.bos_token_id and tok.bos_token_id is not None)
    if tok.chat_template and not special.chat_template:
        writer.add_chat_template(tok.chat_template)


def tokenizer_matches_gguf(model_dir: Path, base_gguf: Path) -> bool:
    """True when the folder's tokenizer has the base GGUF's tokens, id for id (so its tokenizer keys can be reused)."""
    from llmopt.models import load_tokenizer

    try:
        tok = load_tokenizer(Path(model_dir))
    except Exception:  # no or broken tokenizer: nothing to match
        return False
    keys = {k: v for k, v, _, _ in _gguf_tokenizer_keys(str(base_gguf), Path(base_gguf).stat().st_mtime_ns)}
    base = keys.get("tokenizer.ggml.tokens")
    if base is None:
        return False
    vocab = tok.get_vocab()
    return len(vocab) == len(base) and all(vocab.get(t) == i for i, t in enumerate(base))


def export_gguf(model_dir: Path, out_file: Path, qtype: str = "Q8_0", base_gguf: Path | None = None) -> dict[str, Any]:
    """Write the safetensors Llama folder `model_dir` as one GGUF file of `qtype` (written to a temp name, then
    renamed); tokenizer keys from `base_gguf` when given, else from tokenizer.json. Returns what was written."""
    import gguf

    t0 = time.perf_counter()
    model_dir, out_file = Path(model_dir), Path(out_file)
    if qtype not in GGUF_QTYPES:
        raise ModelError(f"GGUF type {qtype!r} is not supported; choose one of {', '.join(GGUF_QTYPES)}.")
    cfg = _config(model_dir)
    if base_gguf is not None:
        from llmopt.llm import check_gguf

        check_gguf(Path(base_gguf))
        if not tokenizer_matches_gguf(model_dir, Path(base_gguf)):
            raise ModelError(f"{model_dir}: its tokenizer is not the one in {base_gguf} (tokens differ), so that "
                             "file's tokenizer keys cannot be reused; export without base_gguf to build them from "
                             "tokenizer.json.")
    n_layers = int(cfg["num_hidden_layers"])
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    hidden = int(cfg["hidden_size"])
    head_dim = int(cfg.get("head_dim") or hidden // n_head)
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ("default", "linear"):
        raise ModelError(f"{model_dir / 'config.json'}: rope scaling {rope_type!r} is not supported by the GGUF "
                         "export (default and linear are).")
    theta = rope.get("rope_theta") or cfg.get("rope_theta") or 10000.0
    sd = _state_dict(model_dir)
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    tied = cfg.get("tie_word_embeddings", False)
    tensors: list[tuple[str, Any]] = []
    for name, arr in sd.items():
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue
        gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ModelError(f"{model_dir}: tensor {name!r} has no GGUF name for the Llama architecture; "
                             "is this a plain Llama model?")
        if name.endswith("q_proj.weight"):
            arr = permute_qk(arr, n_head, n_head)
        elif name.endswith("k_proj.weight"):
            arr = permute_qk(arr, n_head, n_kv)
        tensors.append((gname, arr))

    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp-{os.getpid()}")
    types: Counter[str] = Counter()
    try:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name(str(cfg.get("_name_or_path") or model_dir.name))
        w.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
        w.add_embedding_length(hidden)
        w.add_block_count(n_layers)
        w.add_feed_forward_length(int(cfg["intermediate_size"]))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(float(theta))
        if rope_type == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
        w.add_vocab_size(int(cfg["vocab_size"]))
        w.add_file_type(_FILE_TYPE[qtype])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if base_gguf is not None:
            _copy_tokenizer_keys(w, Path(base_gguf))
        else:
            _tokenizer_keys_from_hf(w, model_dir)
        for gname, arr in tensors:
            ttype = _tensor_type(gname, arr, qtype)
            data, raw = _encode(arr, ttype)
            w.add_tensor(gname, data, raw_shape=None if raw is None else data.shape, raw_dtype=raw)
            types[ttype] += 1
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": str(out_file), "qtype": qtype, "bytes": out_file.stat().st_size, "tensor_types": dict(types),
            "tokenizer_from": str(base_gguf) if base_gguf else "tokenizer.json",
            "seconds": round(time.perf_counter() - t0, 2)}


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_quantize(src_gguf: Path, out_gguf: Path, qtype: str) -> dict[str, Any]:
    """llama.cpp's own quantizer (llama_model_quantize) from an F32/F16 GGUF to `qtype`, written atomically."""
    if not llama_cpp_available():
        raise ModelError("llama.cpp's quantizer needs llama-cpp-python (pip install llama-cpp-python).")
    import ctypes

    import llama_cpp

    from llmopt.llm import check_gguf

    src_gguf, out_gguf = Path(src_gguf), Path(out_gguf)
    check_gguf(src_gguf)
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}", None)
    if ftype is None:
        raise ModelError(f"llama.cpp has no quantization type {qtype!r}.")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    tmp = out_gguf.with_name(f".{out_gguf.name}.tmp-{os.getpid()}")
    t0 = time.perf_counter()
    try:
        rc = llama_cpp.llama_model_quantize(str(src_gguf).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ModelError(f"{src_gguf}: llama.cpp's quantizer failed (return code {rc}).")
        os.replace(tmp, out_gguf)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": str(out_gguf), "qtype": qtype, "bytes": out_gguf.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 2)}
