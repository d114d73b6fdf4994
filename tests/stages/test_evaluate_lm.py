"""The evaluate stage on causal LMs: through the pipeline, metrics under `causal`, the report's table and plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmopt.pipeline import run_recipe
from llmopt.rundir import stage_metrics

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CAUSAL_KEYS = {"kind", "runtime", "path", "params", "ppl", "ppl_ci", "perplexity", "prefill_tok_s", "decode_tok_s",
               "generation", "peak_rss_mb", "peak_rss_delta_mb", "size_bytes", "size_mb"}


def _recipe(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text("version: 1\nname: lm\nseed: 1\nthreads: 1\nstages:\n" + body)
    return p


def test_evaluate_causal_on_text_only(tmp_path: Path, tiny_llama: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("The cat sat on the mat. It was a sunny day and the birds sang in the trees.\n" * 30)
    recipe = _recipe(tmp_path, f"""\
  - id: evaluate
    type: evaluate
    data: null
    models: [{tiny_llama}]
    text: {text}
    ppl_window: 64
    ppl_stride: 32
    max_ppl_tokens: 400
    speed_prompts: 3
    max_new_tokens: 6
    generation_warmup: 1
  - {{id: report, type: report}}
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    (sid, kind, m), _ = stage_metrics(run_dir)
    assert "models" not in m and set(m["causal"]["models"]) == {tiny_llama.name}
    e = m["causal"]["models"][tiny_llama.name]
    assert CAUSAL_KEYS <= set(e) and "classification" not in e
    assert e["runtime"] == "transformers fp32 eager" and e["kind"] == "causal_lm"
    assert e["perplexity"]["tokens_scored"] == 399 and e["perplexity"]["stride"] == 32
    assert e["ppl_ci"][0] < e["ppl"] < e["ppl_ci"][1]
    assert e["prefill_tok_s"] > 0 and e["decode_tok_s"] > 0 and e["generation"]["prompts"] == 3
    assert e["size_bytes"] == (tiny_llama / "model.safetensors").stat().st_size
    md = (run_dir / "report" / "report.md").read_text()
    assert "Causal language models (evaluate)" in md and "perplexity [95% CI]" in md
    assert (run_dir / "report" / "evaluate-tokens-perplexity.svg").is_file()


def test_evaluate_mixed_encoder_and_causal_with_instruction(tmp_path: Path, tiny_llama: Path, tiny_bert: Path,
                                                            tiny_data: Path) -> None:
    recipe = _recipe(tmp_path, f"""\
  - {{id: data, type: data, source: {{path: {tiny_data}}}}}
  - id: evaluate
    type: evaluate
    models: [{tiny_bert}, {tiny_llama}]
    latency_runs: 10
    warmup: 1
    throughput_batches: 1
    max_length: 32
    ort_int8_baseline: false
    ppl_window: 32
    max_ppl_tokens: 200
    speed_prompts: 2
    max_new_tokens: 4
    generation_warmup: 0
    instruction:
      template: "Is this review {{labels}}? {{text}}"
      label_words: {{positive: good, negative: bad}}
  - {{id: report, type: report}}
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    _, (sid, kind, m), _ = stage_metrics(run_dir)
    assert set(m["models"]) == {"majority", "tfidf", tiny_bert.name}  # the encoder path, as before
    c = m["causal"]["models"][tiny_llama.name]["classification"]
    assert c["n"] == m["n"] and 0 <= c["accuracy"] <= 1 and c["accuracy_ci"][0] <= c["accuracy"] <= c["accuracy_ci"][1]
    assert c["label_words"] == {"negative": "bad", "positive": "good"} and c["instruction_from"] == "evaluate config"
    vs = m["causal"]["models"][tiny_llama.name]["vs_reference"]
    assert vs["reference"] == tiny_bert.name and -1 <= vs["accuracy"]["diff"] <= 1
    preds = (run_dir / "stages").glob(f"*-evaluate/artifacts/predictions/{tiny_llama.name}.jsonl")
    assert len(next(preds).read_text().splitlines()) == m["n"]
    md = (run_dir / "report" / "report.md").read_text()
    assert "Classification as instruction" in md and "The answer" in md  # the encoders' answer still opens it


def test_causal_only_without_corpus_is_a_recipe_error(tmp_path: Path, tiny_llama: Path) -> None:
    from llmopt.errors import RecipeError

    recipe = _recipe(tmp_path, f"  - {{id: evaluate, type: evaluate, data: null, models: [{tiny_llama}]}}\n")
    with pytest.raises(RecipeError, match="give text:"):
        run_recipe(recipe, runs_root=tmp_path / "runs")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "wikitext2" / "test.txt").is_file(), reason="../shared/data/wikitext2 is absent")
def test_smollm2_wikitext2_perplexity_and_speed(tmp_path: Path) -> None:
    """Real SmolLM2 (dequantized fp32) on the first 4,096 WikiText-2 test tokens (27.61 measured here; the issue's
    26.13 is for the first 32,767). ~40 s on an idle 2-core machine."""
    recipe = _recipe(tmp_path, f"""\
  - id: evaluate
    type: evaluate
    data: null
    models: [{{builtin: smollm2-135m}}]
    text: {SHARED / 'wikitext2' / 'test.txt'}
    max_ppl_tokens: 4096
    speed_prompts: 2
    max_new_tokens: 8
    threads: 2
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    (_, _, m), = stage_metrics(run_dir)
    e = m["causal"]["models"]["builtin:smollm2-135m"]
    assert 15 < e["ppl"] < 45, e["ppl"]
    assert e["decode_tok_s"] > 0 and e["prefill_tok_s"] > e["decode_tok_s"]
    assert 100 < e["size_mb"] < 600
