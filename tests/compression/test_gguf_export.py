"""GGUF export of a Llama causal LM: metadata, tokenizer, tensors within quantization error, transformers loads it
back with close logits; bad input fails with one message and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmopt.errors import ModelError

TEXT = "The quick brown fox jumps over the lazy dog. <|im_start|>user\nHello, world!<|im_end|>"
# largest |logit difference| against the source model, as a share of the source logits' max |value|: measured on
# the tiny random Llama at 0.8% (Q8_0), 5.2% (Q4_0), 9.3% (Q4_1); F32 is exact
LOGIT_TOL = {"F32": 1e-5, "Q8_0": 0.03, "Q4_0": 0.2, "Q4_1": 0.2}
# largest |weight error| per tensor as a share of the tensor's max |weight|: half a quantization step
# (Q8_0: amax/127/2; Q4_1: (max-min)/15/2 ≤ amax/15) or, for Q4_0, one step (d = amax/8 and the side opposite
# the block's extreme is clipped at +7d), with 10% slack for the f16 scales
WEIGHT_TOL = {"Q8_0": 1.1 / 254, "Q4_0": 1.1 / 8, "Q4_1": 1.1 / 15}


@pytest.fixture(scope="module")
def exports(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from llmopt.compression.gguf_export import export_gguf
    from llmopt.llm import smollm2_gguf

    out = tmp_path_factory.mktemp("gguf")
    files = {}
    for qt in ("F32", "Q8_0", "Q4_0", "Q4_1"):
        files[qt] = out / f"tiny.{qt}.gguf"
        export_gguf(tiny_llama, files[qt], qt, base_gguf=smollm2_gguf())
    return files


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits[0].numpy()


def _load_gguf(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def test_metadata_and_tensor_types(exports: dict[str, Path], tiny_llama: Path) -> None:
    import gguf

    cfg = json.loads((tiny_llama / "config.json").read_text())
    for qt, path in exports.items():
        r = gguf.GGUFReader(str(path))
        meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}
        assert meta["general.architecture"] == "llama"
        assert meta["llama.block_count"] == cfg["num_hidden_layers"] == 2
        assert meta["llama.embedding_length"] == 32
        assert meta["llama.feed_forward_length"] == 64
        assert meta["llama.attention.head_count"] == 4
        assert meta["llama.attention.head_count_kv"] == 2
        assert meta["llama.context_length"] == 512
        assert meta["llama.rope.dimension_count"] == 8
        assert meta["llama.rope.freq_base"] == pytest.approx(10000.0)
        assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
        assert meta["llama.vocab_size"] == 49152
        assert meta["general.file_type"] == {"F32": 0, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}[qt]
        types = {t.name: t.tensor_type.name for t in r.tensors}
        assert "output.weight" not in types  # tied embeddings, as the source
        assert len(types) == 2 * 9 + 2
        assert all(types[n] == "F32" for n in types if n.endswith("norm.weight"))
        if qt != "F32":
            assert types["token_embd.weight"] == "Q8_0"  # as the shipped SmolLM2 Q4_1 file
            assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_down.weight"] == qt


def test_tensors_within_quantization_error(exports: dict[str, Path], tiny_llama: Path) -> None:
    import gguf
    from safetensors.numpy import load_file

    from llmopt.compression.gguf_export import permute_qk

    src = load_file(str(tiny_llama / "model.safetensors"))
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    ref = {}
    for name, w in src.items():
        if name.endswith("q_proj.weight"):
            w = permute_qk(w, 4, 4)
        elif name.endswith("k_proj.weight"):
            w = permute_qk(w, 4, 2)
        ref[tmap.get_name(name, try_suffixes=(".weight", ".bias"))] = w
    for qt, path in exports.items():
        for t in gguf.GGUFReader(str(path)).tensors:
            w = ref[t.name]
            got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
            err = float(np.abs(got - w).max())
            if t.tensor_type.name == "F32":
                assert err == 0.0, (qt, t.name)
            else:
                tol = WEIGHT_TOL[t.tensor_type.name] * float(np.abs(w).max())
                assert 0 < err <= tol, (qt, t.name, err, tol)


def test_transformers_loads_back_with_close_logits(exports: dict[str, Path], tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    ids = tok(TEXT, return_tensors="pt").input_ids
    src = _logits(AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval(), ids)
    scale = float(np.abs(src).max())
    diffs = {}
    for qt, path in exports.items():
        diffs[qt] = float(np.abs(_logits(_load_gguf(path), ids) - src).max()) / scale
        assert diffs[qt] <= LOGIT_TOL[qt], (qt, diffs[qt])
    assert diffs["F32"] < diffs["Q8_0"] < diffs["Q4_0"]  # more bits, closer: the quantization really happened


def test_tokenizer_round_trips(exports: dict[str, Path], tiny_llama: Path, tmp_path: Path) -> None:
    import gguf
    from transformers import AutoTokenizer

    from llmopt.compression.gguf_export import export_gguf

    path = exports["Q8_0"]
    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    back = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True)
    for text in (TEXT, chat):
        assert back(text).input_ids == tok(text).input_ids
    assert (back.bos_token, back.eos_token) == (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    # built from tokenizer.json instead of the base GGUF: the same tokens, types, merges and special ids
    hf = tmp_path / "hf.gguf"
    export_gguf(tiny_llama, hf, "Q8_0", base_gguf=None)
    a, b = gguf.GGUFReader(str(path)).fields, gguf.GGUFReader(str(hf)).fields
    for key in ("tokens", "token_type", "merges", "bos_token_id", "eos_token_id", "padding_token_id", "model"):
        assert a[f"tokenizer.ggml.{key}"].contents() == b[f"tokenizer.ggml.{key}"].contents(), key
    assert a["tokenizer.chat_template"].contents() == b["tokenizer.chat_template"].contents()
    assert len(b["tokenizer.ggml.tokens"].contents()) == len(tok)


def test_sizes_order(exports: dict[str, Path]) -> None:
    s = {qt: p.stat().st_size for qt, p in exports.items()}
    assert s["Q4_0"] < s["Q4_1"] < s["Q8_0"] < s["F32"]


def test_tokenizer_matches_base(tiny_llama: Path, tiny_bert: Path) -> None:
    from llmopt.compression.gguf_export import tokenizer_matches_gguf
    from llmopt.llm import smollm2_gguf

    assert tokenizer_matches_gguf(tiny_llama, smollm2_gguf())
    assert not tokenizer_matches_gguf(tiny_bert, smollm2_gguf())


def test_bad_inputs_leave_nothing(tiny_llama: Path, tiny_bert: Path, tmp_path: Path, monkeypatch) -> None:
    import gguf

    from llmopt.compression.gguf_export import export_gguf

    out = tmp_path / "out"
    with pytest.raises(ModelError, match=r"Llama architecture only.*this model is Bert"):
        export_gguf(tiny_bert, out / "x.gguf", "Q8_0")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a GGUF file"):
        export_gguf(tiny_llama, out / "x.gguf", "Q8_0", base_gguf=fake)
    with pytest.raises(ModelError, match="Q3_K.*not supported"):
        export_gguf(tiny_llama, out / "x.gguf", "Q3_K")
    # a Llama whose tokenizer is not the base GGUF's (here BERT's WordPiece): neither reusable nor writable as BPE
    import shutil

    from llmopt.llm import smollm2_gguf

    other = tmp_path / "llama-with-wordpiece"
    other.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_llama / f, other / f)
    for f in tiny_bert.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, other / f.name)
    with pytest.raises(ModelError, match="tokenizer is not the one in.*export without base_gguf"):
        export_gguf(other, out / "x.gguf", "Q8_0", base_gguf=smollm2_gguf())
    with pytest.raises(ModelError, match="byte-level BPE tokenizers only"):
        export_gguf(other, out / "x.gguf", "Q8_0")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf.quants, "quantize", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_gguf(tiny_llama, out / "x.gguf", "Q4_0")
    assert not out.exists() or list(out.iterdir()) == []


def test_llama_cpp_loads_and_generates(exports: dict[str, Path], tiny_llama: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (optional extra: "
                                    "pip install llama-cpp-python); the GGUF runtime check is skipped")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    ids = tok(TEXT).input_ids
    import torch

    src = _logits(AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval(), torch.tensor([ids]))
    llm = llama_cpp.Llama(str(exports["F32"]), n_ctx=128, logits_all=True, verbose=False, n_threads=1)
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)])
    assert float(np.abs(got - src).max()) <= 1e-3 * max(1.0, float(np.abs(src).max()))
    out = llm(TEXT, max_tokens=8, temperature=0.0)
    assert out["usage"]["completion_tokens"] >= 1
    for qt in ("Q8_0", "Q4_1"):
        q = llama_cpp.Llama(str(exports[qt]), n_ctx=128, verbose=False, n_threads=1)
        assert q(TEXT, max_tokens=4, temperature=0.0)["usage"]["completion_tokens"] >= 1


def test_llama_cpp_quantizer_matches_ours(exports: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (optional extra); llama.cpp's own "
                        "quantizer cannot be compared")
    import gguf

    from llmopt.compression.gguf_export import llama_cpp_quantize

    theirs_path = tmp_path / "llama-cpp.Q4_1.gguf"
    info = llama_cpp_quantize(exports["F32"], theirs_path, "Q4_1")
    assert info["bytes"] == theirs_path.stat().st_size < exports["F32"].stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == [theirs_path.name]  # no temp file left
    ours = {t.name: t for t in gguf.GGUFReader(str(exports["Q4_1"])).tensors}
    same = 0
    for t in gguf.GGUFReader(str(theirs_path)).tensors:
        if t.tensor_type.name == "Q4_1" and ours[t.name].tensor_type.name == "Q4_1":
            a = gguf.quants.dequantize(t.data, t.tensor_type)
            b = gguf.quants.dequantize(ours[t.name].data, ours[t.name].tensor_type)
            assert float(np.abs(a - b).max()) <= 1e-3 * float(np.abs(a).max()), t.name
            same += 1
    assert same >= 14  # every projection matrix is Q4_1 in both files
