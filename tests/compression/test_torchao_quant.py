"""torchao weight-only quantization of a causal LM: the Linear weights really change type, the folder reloads with
`from_pretrained` (quantized tensors in safetensors), logits stay close; int4 says why when this CPU cannot run it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmopt.errors import ModelError


def _logits(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    ids = tok("The quick brown fox jumps over the lazy dog, again and again.", return_tensors="pt").input_ids
    with torch.no_grad():
        return model, model(ids).logits[0].numpy()


@pytest.fixture(scope="module")
def int8_folder(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmopt.compression.torchao_quant import quantize_torchao

    out = tmp_path_factory.mktemp("ao") / "int8"
    quantize_torchao(tiny_llama, out, "torchao_int8", "tiny")
    return out


def test_int8_weight_only_round_trip(int8_folder: Path, tiny_llama: Path) -> None:
    import torch
    from safetensors import safe_open

    cfg = json.loads((int8_folder / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "torchao"
    assert cfg["quantization_config"]["quant_type"]["default"]["_type"] == "Int8WeightOnlyConfig"
    meta = json.loads((int8_folder / "llmopt_quant.json").read_text())
    assert meta["format"] == "torchao" and meta["scheme"] == "int8_weight_only" and meta["source"] == "tiny"
    assert meta["quantized_linears"] == meta["linears"] - 1  # every projection; lm_head is the tied embedding
    assert (int8_folder / "tokenizer.json").is_file()
    with safe_open(str(int8_folder / "model.safetensors"), framework="pt") as st:
        dtypes = {st.get_slice(k).get_dtype() for k in st.keys()}
    assert "I8" in dtypes  # the weights are stored quantized, not as fp32 to be quantized on load
    model, got = _logits(int8_folder)
    q = model.model.layers[0].self_attn.q_proj.weight
    assert type(q).__name__ == "Int8Tensor"
    assert type(q) is not torch.nn.Parameter
    _, ref = _logits(tiny_llama)
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert 0 < rel < 0.03, rel  # measured 0.9% on the tiny random Llama


def test_int4_runs_or_says_why(tiny_llama: Path, tmp_path: Path) -> None:
    from llmopt.compression.torchao_quant import int4_cpu_support, quantize_torchao

    fmt, why = int4_cpu_support()
    out = tmp_path / "int4"
    if fmt is None:
        assert "plain" in why and "tile_packed_to_4d" in why and "torchao_int8" in why
        with pytest.raises(ModelError, match="no kernel that runs on this CPU"):
            quantize_torchao(tiny_llama, out, "torchao_int4", "tiny")
        assert not out.exists() and list(tmp_path.iterdir()) == []
    else:
        meta = quantize_torchao(tiny_llama, out, "torchao_int4", "tiny")
        assert meta["packing_format"] == fmt and meta["quantized_linears"] > 0


def test_runtime_measurement_records_a_choice(int8_folder: Path) -> None:
    from llmopt.compression.torchao_quant import measure_runtime, read_runtime, write_runtime

    rt = measure_runtime(int8_folder, threads=1, new_tokens=4, repeats=2, try_compile=False)
    assert set(rt["decode_tok_s"]) == {"eager", "static_cache"} and all(v > 0 for v in rt["decode_tok_s"].values())
    assert rt["compile"] is False and isinstance(rt["static_cache"], bool)
    write_runtime(int8_folder, rt)
    assert read_runtime(int8_folder)["static_cache"] == rt["static_cache"]
