"""finetune task causal_lm / sft on the tiny Llama through the real pipeline: exact files, loadable outputs,
dev loss that falls, and bad input (not a causal LM, an SFT row without a response, a LoRA target) as one message."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from llmopt.errors import DataError, ModelError
from llmopt.pipeline import run_recipe
from tests.conftest import make_rows, write_jsonl

ADAPTER = {"adapter_config.json", "adapter_model.safetensors", "README.md"}
MODEL = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja"}
CKPT_COMMON = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin",
               "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "llmopt-checksums.json"}


def _files(run_dir: Path) -> set[str]:
    return {re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", p.relative_to(run_dir).as_posix())
            for p in run_dir.rglob("*") if p.is_file()}


def _recipe(tmp_path: Path, stages: str, name: str = "lm") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\nseed: 3\nthreads: 1\nstages:\n{stages}  - {{id: report, type: report}}\n")
    return path


def _metrics(run_dir: Path, folder: str) -> dict:
    return json.loads((run_dir / "stages" / folder / "metrics.json").read_text())


def test_sft_lora_from_a_data_stage_writes_merged_model_adapter_and_instruction(tmp_path, tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    from llmopt.data.sft import read_instruction

    data = write_jsonl(tmp_path / "rows.jsonl", make_rows(60))
    recipe = _recipe(tmp_path, f"""\
  - {{id: data, type: data, source: {{path: {data}}}}}
  - id: sft
    type: finetune
    task: sft
    model: {tiny_llama}
    lora: {{r: 4, alpha: 8, dropout: 0.0}}
    instruction: {{template: "Is this review {{labels}}?\\n{{text}}", label_words: {{positive: good, negative: bad}}}}
    train: {{epochs: 2, batch_size: 16, learning_rate: 5.0e-2, max_length: 96, logging_steps: 1}}
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    ft = "stages/01-sft"
    expected = {
        "recipe.yaml", "recipe.resolved.yaml", "manifest.json", "events.jsonl", "run.log",
        *(f"stages/00-data/{f}" for f in ("config.json", "metrics.json", "DONE", "artifacts/train.jsonl",
                                           "artifacts/dev.jsonl", "artifacts/test.jsonl", "artifacts/labels.json")),
        *(f"{ft}/{f}" for f in ("config.json", "metrics.json", "DONE", "train_log.jsonl", "initial_eval.json",
                                "artifacts/log_history.jsonl", "tensorboard/events.out.tfevents.*")),
        *(f"{ft}/artifacts/adapter/{f}" for f in ADAPTER),
        *(f"{ft}/artifacts/model/{f}" for f in MODEL | {"llmopt_instruction.json"}),
        # 48 train rows, batch 16: 3 steps an epoch, a checkpoint each epoch; a checkpoint holds the adapter only
        *(f"{ft}/checkpoints/checkpoint-{s}/{f}" for s in (3, 6) for f in CKPT_COMMON | ADAPTER),
        "stages/02-report/config.json", "stages/02-report/metrics.json", "stages/02-report/DONE",
        "report/report.md", "report/report.html", "report/sft-training-curve.svg",
    }
    assert _files(run_dir) == expected

    m = _metrics(run_dir, "01-sft")
    assert m["task"] == "sft" and m["n_train"] == 48 and m["n_dev"] == 6 and m["outputs"] == ["adapter", "model"]
    assert m["merged"] is True and m["lora"]["r"] == 4 and 0 < m["trainable_share"] < 0.05
    assert m["dev_loss"] < m["dev_loss_before"]  # learning the label words lowers the held-out loss
    assert m["dev_perplexity"] == pytest.approx(math.exp(m["dev_loss"]))
    assert m["train_loss_tokens"] == 48 * 2  # "good"/"bad" + <|im_end|>: one token each
    assert m["instruction"]["label_words"] == {"negative": "bad", "positive": "good"}
    model_dir = run_dir / ft / "artifacts/model"
    ins = read_instruction(model_dir)
    assert ins == {"template": "Is this review {labels}?\n{text}", "label_words": {"negative": "bad", "positive": "good"}}

    # the merged folder loads with plain transformers and matches base + adapter
    from peft import PeftModel

    merged = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    adapted = PeftModel.from_pretrained(base, run_dir / ft / "artifacts/adapter").eval()
    x = torch.tensor([[1, 20, 300, 4000, 2]])
    with torch.no_grad():
        got, want = merged(input_ids=x).logits, adapted(input_ids=x).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama)(input_ids=x).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-4)
    md = (run_dir / "report/report.md").read_text()
    assert "Task sft" in md and "LoRA r 4" in md and "merged model and its adapter" in md


def test_causal_lm_full_finetune_on_text_with_held_out_documents(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM

    text = tmp_path / "docs.txt"
    text.write_text("\n\n".join(f"the cat number {i} sat on the mat and looked at the dog" for i in range(40)))
    recipe = _recipe(tmp_path, f"""\
  - id: clm
    type: finetune
    task: causal_lm
    model: {tiny_llama}
    text: {text}
    block_size: 32
    train: {{epochs: 2, batch_size: 4, learning_rate: 3.0e-3, logging_steps: 1}}
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    arts = {p.relative_to(run_dir / "stages/00-clm/artifacts").as_posix()
            for p in (run_dir / "stages/00-clm/artifacts").rglob("*") if p.is_file()}
    assert arts == {"log_history.jsonl", *(f"model/{f}" for f in MODEL)}  # no adapter, no instruction
    m = _metrics(run_dir, "00-clm")
    assert m["task"] == "causal_lm" and m["lora"] is None and m["trainable_share"] == 1.0
    assert m["train_documents"] == 36 and m["dev_documents"] == 4  # dev_fraction 0.1 of the documents
    assert m["max_length"] == 32 and m["train_tokens"] > 30 * m["n_train"] - 32
    assert m["dev_loss"] < m["dev_loss_before"] - 0.5 and m["train_tokens_per_s"] > 0
    AutoModelForCausalLM.from_pretrained(run_dir / "stages/00-clm/artifacts/model")


def test_sft_jsonl_with_merge_false_writes_the_adapter_only(tmp_path, tiny_llama):
    rows = [{"prompt": f"What is {i} plus 1?", "response": str(i + 1)} for i in range(20)]
    train, dev = write_jsonl(tmp_path / "t.jsonl", rows[:16]), write_jsonl(tmp_path / "d.jsonl", rows[16:])
    recipe = _recipe(tmp_path, f"""\
  - id: sft
    type: finetune
    task: sft
    model: {tiny_llama}
    text: {train}
    dev_file: {dev}
    lora: {{r: 2, target_modules: [q_proj, v_proj]}}
    merge: false
    train: {{max_steps: 2, batch_size: 8}}
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    m = _metrics(run_dir, "00-sft")
    assert m["outputs"] == ["adapter"] and m["merged"] is False and (m["n_train"], m["n_dev"]) == (16, 4)
    assert not (run_dir / "stages/00-sft/artifacts/model").exists()
    assert json.loads((run_dir / "stages/00-sft/artifacts/adapter/adapter_config.json").read_text())["r"] == 2
    assert "merge: false" in (run_dir / "report/report.md").read_text()


def test_bad_lm_inputs_are_one_clear_error(tmp_path, tiny_llama, tiny_bert):
    good = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "a", "response": "b"}] * 4)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "no answer"}])

    def run(name: str, body: str) -> None:
        run_recipe(_recipe(tmp_path, f"  - {{id: ft, type: finetune, task: sft, {body}}}\n", name),
                   runs_root=tmp_path / "runs")

    with pytest.raises(DataError, match=r"bad\.jsonl:2: no 'response'"):
        run("nores", f"model: {tiny_llama}, text: {bad}")
    with pytest.raises(ModelError, match=r"finetune 'ft': model .* is not a causal LM"):
        run("notlm", f"model: {tiny_bert}, text: {good}")
    with pytest.raises(ModelError, match=r"finetune 'ft': lora.target_modules: 'query' match\(es\) no Linear.*q_proj"):
        run("badlora", f"model: {tiny_llama}, text: {good}, lora: {{target_modules: [q_proj, query]}}")


def test_lm_task_defaults_and_field_checks():
    from pydantic import ValidationError

    from llmopt.stages.finetune import FinetuneConfig

    lora = FinetuneConfig(id="ft", task="sft", text="x.jsonl", lora={"r": 4})
    assert lora.model.builtin == "smollm2-135m" and lora.data is None
    assert (lora.train.learning_rate, lora.train.metric_for_best, lora.train.max_length) == (2e-4, "loss", 512)
    full = FinetuneConfig(id="ft", task="causal_lm", train={"epochs": 1})
    assert full.data == "data" and full.train.learning_rate == 5e-5 and full.train.epochs == 1
    cls = FinetuneConfig(id="ft")  # classification is unchanged
    assert cls.model.builtin == "minilm" and cls.data == "data" and cls.train.learning_rate == 2e-5
    for bad, msg in [({"task": "sft", "text": "a", "data": "data"}, "not both"),
                     ({"task": "sft", "instruction": {"template": "{review}"}}, r"unknown field \{review\}"),
                     ({"text": "a"}, "only for task causal_lm or sft"),
                     ({"task": "causal_lm", "text": "a", "train": {"metric_for_best": "accuracy"}}, "held-out loss"),
                     ({"task": "sft", "text": "a", "instruction": {}}, "only for task sft from a data stage")]:
        with pytest.raises(ValidationError, match=msg):
            FinetuneConfig(id="ft", **bad)
