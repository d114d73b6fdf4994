"""The whole tiny causal path through the real pipeline: data → LoRA SFT → GGUF quantize → evaluate (the SFT
model, its GGUF and the zero-shot base side by side: perplexity, speed, label accuracy) → report."""

from __future__ import annotations

import json
import re
from pathlib import Path

from llmopt.pipeline import run_recipe
from tests.conftest import make_rows, write_jsonl


def _files(run_dir: Path, under: str) -> set[str]:
    return {re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", p.relative_to(run_dir / under).as_posix())
            for p in (run_dir / under).rglob("*") if p.is_file()}


def test_tiny_causal_recipe_finetune_quantize_evaluate_report(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_jsonl(tmp_path / "rows.jsonl", make_rows(60))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(r["text"] for r in make_rows(80, seed=1)), encoding="utf-8")
    recipe = tmp_path / "lm.yaml"
    recipe.write_text(f"""\
version: 1
name: lm-chain
seed: 3
threads: 1
stages:
  - {{id: data, type: data, source: {{path: {data}}}}}
  - id: sft
    type: finetune
    task: sft
    model: {tiny_llama}
    lora: {{r: 4, alpha: 8, dropout: 0.0}}
    instruction: {{template: "Is this review {{labels}}?\\n{{text}}", label_words: {{positive: good, negative: bad}}}}
    train: {{epochs: 2, batch_size: 16, learning_rate: 5.0e-2, max_length: 96}}
  - {{id: gguf, type: quantize, model: sft, scheme: gguf_q8_0}}
  - id: evaluate
    type: evaluate
    models: [sft, gguf, {tiny_llama}]
    reference: sft
    instruction: {{template: "Is this review {{labels}}?\\n{{text}}", label_words: {{positive: good, negative: bad}}}}
    text: {corpus}
    ppl_window: 32
    max_ppl_tokens: 256
    speed_prompts: 2
    max_new_tokens: 4
    generation_warmup: 1
  - {{id: report, type: report}}
""", encoding="utf-8")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")

    q = "stages/02-gguf"
    assert _files(run_dir, q) == {"config.json", "metrics.json", "DONE", "artifacts/model/model.Q8_0.gguf",
                                  "artifacts/model/llmopt_quant.json", "artifacts/model/tokenizer.json",
                                  "artifacts/model/tokenizer_config.json", "artifacts/model/chat_template.jinja",
                                  "artifacts/model/llmopt_instruction.json"}  # the SFT model's, carried over
    assert (run_dir / q / "artifacts/model/model.Q8_0.gguf").read_bytes()[:4] == b"GGUF"
    e = "stages/03-evaluate"
    assert _files(run_dir, e) == {"config.json", "metrics.json", "DONE", *(f"artifacts/predictions/{n}.jsonl"
                                                                          for n in ("sft", "gguf", "tiny-llama"))}
    ev = json.loads((run_dir / e / "metrics.json").read_text())
    models = ev["causal"]["models"]
    assert list(models) == ["sft", "gguf", "tiny-llama"]
    for m in models.values():
        assert m["ppl"] > 1 and m["ppl_ci"][0] <= m["ppl"] <= m["ppl_ci"][1]
        assert m["prefill_tok_s"] > 0 and m["decode_tok_s"] > 0
        assert m["classification"]["n"] == 6 and m["classification"]["instruction_from"]
    assert models["sft"]["classification"]["instruction_from"] == "model folder"
    assert models["gguf"]["classification"]["instruction_from"] == "model folder"
    assert models["tiny-llama"]["classification"]["instruction_from"] == "evaluate config"  # zero-shot
    assert models["gguf"]["runtime"] in ("llama.cpp", "transformers (dequantized GGUF)")
    # the Q8_0 GGUF of the SFT model scores like the SFT model itself
    assert abs(models["gguf"]["ppl"] / models["sft"]["ppl"] - 1) < 0.05
    report = (run_dir / "report/report.md").read_text(encoding="utf-8")
    assert "Perplexity" in report or "perplexity" in report
    assert {p.name for p in (run_dir / "report").iterdir()} == {
        "report.md", "report.html", "sft-training-curve.svg", "evaluate-tokens-perplexity.svg"}
