"""Real SmolLM2-135M: Q4_1 and Q8_0 GGUF exports load back in transformers, agree with the fp32 model on the next
token, have the expected sizes, and re-quantizing the dequantized shipped Q4_1 file to Q4_1 gives back its weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SENTENCES = ["The capital of France is", "Water boils at a temperature of",
             "<|im_start|>user\nWhat is the largest planet in the solar system?<|im_end|>\n<|im_start|>assistant\n",
             "Once upon a time, there was a little girl who", "The three primary colors are red, blue and",
             "import numpy as np\nx = np.zeros("]


def test_smollm2_gguf_exports(tmp_path: Path) -> None:
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmopt.compression.gguf_export import export_gguf, tokenizer_matches_gguf
    from llmopt.llm import load_causal_lm, smollm2_gguf, smollm2_path

    src, shipped = smollm2_path(), smollm2_gguf()
    assert tokenizer_matches_gguf(src, shipped)
    tok = AutoTokenizer.from_pretrained(str(src))
    encoded = [tok(s, return_tensors="pt").input_ids for s in SENTENCES]
    fp32 = load_causal_lm(src)
    with torch.no_grad():
        ref = [fp32(ids).logits[0] for ids in encoded]
    sizes, agree = {}, {}
    for qt in ("Q4_1", "Q8_0"):
        out = tmp_path / f"smollm2.{qt}.gguf"
        export_gguf(src, out, qt, base_gguf=shipped)
        sizes[qt] = out.stat().st_size
        model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32).eval()
        with torch.no_grad():
            got = [model(ids).logits[0] for ids in encoded]
        # next-token top-1 at every position of every sentence
        agree[qt] = float(torch.cat([(g.argmax(-1) == r.argmax(-1)) for g, r in zip(got, ref)]).float().mean())
        assert agree[qt] >= 0.9, (qt, agree[qt])
        del model
    print(f"sizes MB: { {k: round(v / 1e6, 1) for k, v in sizes.items()} }, top-1 agreement: {agree}")
    assert 90e6 <= sizes["Q4_1"] <= 100e6
    assert 140e6 <= sizes["Q8_0"] <= 150e6
    # the fp32 model is the dequantized shipped Q4_1: re-quantizing to Q4_1 should return (almost) the same weights
    ours = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "smollm2.Q4_1.gguf")).tensors}
    worst = 0.0
    for t in gguf.GGUFReader(str(shipped)).tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        b = gguf.quants.dequantize(ours[t.name].data, ours[t.name].tensor_type)
        assert ours[t.name].tensor_type == t.tensor_type, t.name
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)))
    print(f"largest weight change against the shipped Q4_1 file, relative to the tensor's max: {worst:.2e}")
    assert worst < 1e-3  # measured: 0 — every block comes back bit for bit
