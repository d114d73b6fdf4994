"""LoRA SFT of the real SmolLM2-135M-Instruct (builtin) for 4 steps of 4 tiny rows: the merged output loads with
AutoModelForCausalLM and the held-out loss on the label words fell. (A training step of SmolLM2 on 2 CPU cores
costs seconds per few hundred tokens, so the run is kept this small.)"""

import json

import pytest

from tests.conftest import make_rows, write_jsonl


@pytest.mark.slow
def test_lora_sft_of_smollm2_lowers_dev_loss(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmopt.data.sft import build_messages, parse_label, read_instruction
    from llmopt.pipeline import run_recipe

    data = write_jsonl(tmp_path / "rows.jsonl", make_rows(40, seed=4))
    recipe = tmp_path / "slow-sft.yaml"
    recipe.write_text(f"""\
version: 1
name: slow-sft
seed: 3
threads: 2
stages:
  - {{id: data, type: data, source: {{path: {data}}}}}
  - id: sft
    type: finetune
    task: sft
    model: {{builtin: smollm2-135m}}
    lora: {{r: 8, alpha: 16}}
    train: {{max_steps: 4, batch_size: 4, eval_batch_size: 4, learning_rate: 2.0e-3, max_length: 96, logging_steps: 1}}
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    m = json.loads((run_dir / "stages/01-sft/metrics.json").read_text())
    print({k: m[k] for k in ("dev_loss_before", "dev_loss", "trainable_params", "train_tokens_per_s",
                             "train_runtime_s")})
    assert m["base_model"] == "builtin:smollm2-135m" or "smollm2" in m["base_model"]
    assert m["n_train"] == 32 and m["global_steps"] == 4
    assert m["dev_loss"] < 0.8 * m["dev_loss_before"]
    assert 1e5 < m["trainable_params"] < 0.05 * m["total_params"]

    folder = run_dir / "stages/01-sft/artifacts/model"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ins = read_instruction(folder)
    prompt = tok.apply_chat_template(build_messages("a great film, i loved it", ins), tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert parse_label(answer, ins["label_words"]) in ("positive", "negative"), answer
