"""The quantize stage on a causal LM: GGUF and torchao outputs, exactly the expected files, the checks in metrics;
encoder schemes on a causal LM and causal schemes on an encoder are recipe errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmopt.errors import RecipeError
from tests.compression.conftest import make_ctx

TOKENIZER = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_gguf_scheme_writes_exactly_the_gguf_folder(tiny_llama: Path, data_stage: Path, tmp_path: Path) -> None:
    from llmopt.stages.quantize import QuantizeConfig, run

    ctx = make_ctx(tmp_path, "01-q", {"data": data_stage})
    cfg = QuantizeConfig(id="q", model=str(tiny_llama), scheme="gguf_q4_0", check_texts=4)
    m = run(cfg, ctx).metrics
    assert _files(ctx.out_dir) == {f"model/{f}" for f in TOKENIZER | {"model.Q4_0.gguf", "llmopt_quant.json"}}
    assert not (ctx.stage_dir / ".work.tmp").exists()
    meta = json.loads((ctx.out_dir / "model" / "llmopt_quant.json").read_text())
    assert meta["format"] == "gguf" and meta["qtype"] == "Q4_0" and meta["source"] == str(tiny_llama)
    assert meta["tokenizer_from"] == "base GGUF"
    assert m["kind"] == "causal_lm" and m["scheme"] == "gguf_q4_0" and m["check_texts"] == 4
    assert m["check_texts_from"] == "dev texts of data stage 'data'"
    out = m["outputs"]["gguf_q4_0"]
    assert out["weights_bytes"] == (ctx.out_dir / "model" / "model.Q4_0.gguf").stat().st_size
    assert m["size_ratio_vs_parent"] == pytest.approx(m["parent_weights_bytes"] / out["weights_bytes"])
    assert m["size_ratio_vs_parent"] > 1.5
    assert 0 < out["logit_max_abs_diff_rel"] < 0.2 and 0 <= out["top1_agreement"] <= 1 and out["positions"] > 20


def test_several_schemes_keep_each_and_copy_the_kept_one(tiny_llama: Path, tmp_path: Path) -> None:
    from llmopt.report.render import Doc
    from llmopt.stages.quantize import QuantizeConfig, run, section

    ctx = make_ctx(tmp_path, "01-q", {})
    cfg = QuantizeConfig(id="q", model=str(tiny_llama), data=None, schemes=["gguf_q8_0", "torchao_int8", "torchao_int4"],
                         keep="torchao_int8", runtime="eager", check_texts=3)
    m = run(cfg, ctx).metrics
    top = {p.name for p in ctx.out_dir.iterdir()}
    ok = [s for s in cfg.schemes if "error" not in m["outputs"][s]]
    assert top == {"model", *ok}
    assert {"gguf_q8_0", "torchao_int8"} <= set(ok)
    assert _files(ctx.out_dir / "model") == _files(ctx.out_dir / "torchao_int8")
    assert {"config.json", "model.safetensors", "llmopt_quant.json"} <= _files(ctx.out_dir / "model")
    assert not (ctx.out_dir / "model" / "llmopt_runtime.json").exists()  # runtime: eager skips the timing
    assert m["scheme"] == "torchao_int8" and m["choice"] == "the recipe's keep:"
    assert m["check_texts_from"] == "built-in sentences"
    assert m["outputs"]["gguf_q8_0"]["logit_max_abs_diff_rel"] < 0.03
    if "torchao_int4" not in ok:
        assert "no kernel that runs on this CPU" in m["outputs"]["torchao_int4"]["error"]
    doc = Doc()
    section("q", m, doc)
    text = doc.markdown() if hasattr(doc, "markdown") else str(doc.__dict__)
    assert "gguf_q8_0" in text and "torchao_int8" in text


def test_scheme_model_mismatch_is_a_recipe_error(tiny_llama: Path, tiny_teacher: Path, data_stage: Path,
                                                 tmp_path: Path) -> None:
    from llmopt.stages.quantize import QuantizeConfig, run

    ctx = make_ctx(tmp_path, "01-q", {"data": data_stage})
    with pytest.raises(RecipeError, match="scheme 'dynamic_int8' is for encoder classifiers.*gguf_q4_1"):
        run(QuantizeConfig(id="q", model=str(tiny_llama), scheme="dynamic_int8"), ctx)
    with pytest.raises(RecipeError, match="causal-LM schemes.*is not a causal LM"):
        run(QuantizeConfig(id="q", model=str(tiny_teacher), scheme="gguf_q8_0"), ctx)
    with pytest.raises(RecipeError, match="keep: gguf_q4_0 is not among"):
        run(QuantizeConfig(id="q", model=str(tiny_llama), schemes=["gguf_q8_0"], keep="gguf_q4_0"), ctx)
    assert list(ctx.out_dir.iterdir()) == []
