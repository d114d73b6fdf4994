"""Masked-LM continued pretraining (finetune task mlm): the masking rule on a large batch, held-out MLM loss that
falls on a tiny BERT through the real pipeline, the result loading as a classifier base with every encoder weight,
resume after a kill, and bad input as one message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmopt.errors import DataError, ModelError
from llmopt.pipeline import run_recipe

WORDS = ("the film was a quiet and moving study of grief with a warm score and sharp writing but the middle "
         "drags and the ending feels rushed").split()


def _docs(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))) for _ in range(n)]


@pytest.fixture(scope="module")
def mlm_base(tmp_path_factory, tiny_bert) -> Path:
    """tiny_bert as a masked-LM folder (a head beside the encoder, the pooler carried over)."""
    from llmopt.models import load_tokenizer
    from llmopt.training.mlm import load_masked_lm, save_masked_lm

    out = tmp_path_factory.mktemp("mlm") / "tiny-mlm"
    model, _ = load_masked_lm(tiny_bert)
    save_masked_lm(model, load_tokenizer(tiny_bert), out, tiny_bert, {"max_length": 32, "truncation": "right"})
    return out


def _recipe(tmp_path: Path, stages: str, name: str = "mlm") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\nseed: 3\nthreads: 1\nstages:\n{stages}")
    return path


def _metrics(run_dir: Path, folder: str) -> dict:
    return json.loads((run_dir / "stages" / folder / "metrics.json").read_text())


def test_masking_rate_labels_and_the_80_10_10_rule(tiny_bert):
    import torch

    from llmopt.models import load_tokenizer
    from llmopt.training.mlm import MlmCollator, encode_documents

    torch.manual_seed(0)
    tok = load_tokenizer(tiny_bert)
    ex = encode_documents(tok, _docs(3000), 32)
    batch = MlmCollator(tok)([{k: e[k] for k in ("input_ids", "attention_mask", "special_tokens_mask", "doc")}
                              for e in ex])
    width = batch["input_ids"].shape[1]
    orig = torch.tensor([e["input_ids"] + [tok.pad_token_id] * (width - len(e["input_ids"])) for e in ex])
    special = torch.tensor([e["special_tokens_mask"] + [1] * (width - len(e["special_tokens_mask"])) for e in ex])
    chosen = batch["labels"] != -100
    n_text = int((special == 0).sum())
    assert n_text > 30000
    assert abs(int(chosen.sum()) / n_text - 0.15) < 0.01  # 15% of the text tokens
    assert not (chosen & (special == 1)).any()  # [CLS], [SEP] and padding are never chosen
    assert torch.equal(batch["labels"][chosen], orig[chosen])  # labels are the original tokens
    assert torch.equal(batch["input_ids"][~chosen], orig[~chosen])  # unchosen tokens are untouched
    got = batch["input_ids"][chosen]
    masked = float((got == tok.mask_token_id).float().mean())
    kept = float((got == orig[chosen]).float().mean())
    replaced = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(replaced - 0.1) < 0.02, (masked, kept)


def test_fixed_dev_masks_are_reproducible_and_follow_the_same_rule(tiny_bert):
    from llmopt.models import load_tokenizer
    from llmopt.training.mlm import encode_documents, mask_fixed

    tok = load_tokenizer(tiny_bert)
    ex = encode_documents(tok, _docs(400), 32)
    a, b, c = mask_fixed(tok, ex, seed=1), mask_fixed(tok, ex, seed=1), mask_fixed(tok, ex, seed=2)
    assert a == b and a != c
    chosen = sum(lab != -100 for e in a for lab in e["labels"])
    text = sum(len(e["input_ids"]) - 2 for e in ex)
    assert 0.12 < chosen / text < 0.18
    assert [e["doc"] for e in a] == [e["doc"] for e in ex]


def test_long_documents_are_cut_into_chunks_that_keep_their_document(tiny_bert):
    from llmopt.models import load_tokenizer
    from llmopt.training.mlm import encode_documents

    tok = load_tokenizer(tiny_bert)
    ex = encode_documents(tok, ["word " * 100, "short one"], 32)
    assert [len(e["input_ids"]) for e in ex] == [32, 32, 32, 12, 4]  # 100 words: 30 + 30 + 30 + 10, each + CLS, SEP
    assert [e["doc"] for e in ex] == [0, 0, 0, 0, 1]
    assert all(e["input_ids"][0] == tok.cls_token_id and e["input_ids"][-1] == tok.sep_token_id for e in ex)


def test_mlm_finetune_lowers_held_out_loss_and_its_folder_is_a_classifier_base(tmp_path, tiny_bert, mlm_base):
    import torch

    from llmopt.models import load_classifier
    from llmopt.training.mlm import load_masked_lm

    text = tmp_path / "domain.txt"
    text.write_text("\n\n".join(_docs(240)))
    general = tmp_path / "general.txt"
    general.write_text("\n\n".join(f"chapter {i} of the history of the river valley and its towns" for i in range(30)))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": d, "label": "pos" if "warm" in d else "neg"}) + "\n"
                            for d in _docs(80, seed=1)))
    recipe = _recipe(tmp_path, f"""\
  - id: adapt
    type: finetune
    task: mlm
    model: {mlm_base}
    text: {text}
    general_text: {general}
    train: {{epochs: 4, batch_size: 16, learning_rate: 3.0e-3, max_length: 32, logging_steps: 5}}
  - {{id: data, type: data, source: {{path: {rows}}}, split: {{dev: 0.2, test: 0.2}}}}
  - id: cls
    type: finetune
    data: data
    model: adapt
    train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-3, max_length: 32}}
  - {{id: student, type: distill, teacher: cls, student_model: adapt, train: {{epochs: 1, batch_size: 16}}}}
  - id: gain
    type: compare
    model: {mlm_base}
    treatment_model: adapt
    seeds: [1, 2]
    train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-3, max_length: 32}}
  - {{id: report, type: report}}
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    m = _metrics(run_dir, "00-adapt")
    assert m["task"] == "mlm" and m["dev_loss"] < m["dev_loss_before"] - 0.5
    assert m["dev_perplexity"] == pytest.approx(__import__("math").exp(m["dev_loss"]))
    assert m["head_initialised"] == [] and m["carried_from_base"] == ["bert.pooler.dense.bias",
                                                                      "bert.pooler.dense.weight"]
    d = m["domain_eval"]
    assert set(d) == {"domain", "general"}
    dom = d["domain"]
    assert dom["after"]["ppl"] < dom["before"]["ppl"] and dom["change"]["verdict"] == "lower"
    assert dom["after"]["ppl_ci"][0] <= dom["after"]["ppl"] <= dom["after"]["ppl_ci"][1]
    assert "doc_nll_sums" not in dom["after"]
    folder = run_dir / "stages/00-adapt/artifacts/model"
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                                  "tokenizer_config.json", "llmopt_inference.json"}
    mlm_model, missing = load_masked_lm(folder)
    assert missing == []
    clf = load_classifier(folder, labels=["neg", "pos"], ignore_mismatched_sizes=True)
    enc, ref = clf.state_dict(), mlm_model.state_dict()
    shared = [k for k in ref if k.startswith("bert.")]
    assert len(shared) > 30 and all(torch.equal(enc[k], ref[k]) for k in shared)
    base = load_classifier(tiny_bert).state_dict()
    assert torch.equal(enc["bert.pooler.dense.weight"], base["bert.pooler.dense.weight"])  # carried, not re-drawn
    assert not torch.equal(enc["bert.encoder.layer.0.attention.self.query.weight"],
                           base["bert.encoder.layer.0.attention.self.query.weight"])  # the MLM training changed it
    assert _metrics(run_dir, "02-cls")["base_model"].endswith("artifacts/model")
    assert _metrics(run_dir, "03-student")["student"].startswith("model ")
    g = _metrics(run_dir, "04-gain")
    assert g["treatment"] == "data" and g["treatment_model"].endswith("artifacts/model")
    assert len(g["accuracy"]["treatment"]) == 2 and g["accuracy_gain"]["n_seeds"] == 2
    report = (run_dir / "report" / "report.md").read_text()
    assert "pseudo-perplexity before" in report and "| general |" in report and "Measured gain:" in report


def test_an_encoder_without_mlm_head_reports_no_before(tmp_path, tiny_bert):
    """A base saved without a masked-LM head (like the bundled MiniLM) starts with a random head: no 'before'.
    The text comes from a data stage (its train texts; dev texts held out)."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": d, "label": "a" if i % 2 else "b"}) + "\n"
                            for i, d in enumerate(_docs(60))))
    recipe = _recipe(tmp_path, f"""\
  - {{id: data, type: data, source: {{path: {rows}}}, split: {{dev: 0.2, test: 0.2}}}}
  - id: adapt
    type: finetune
    task: mlm
    data: data
    model: {tiny_bert}
    train: {{epochs: 1, batch_size: 16, max_length: 32}}
""")
    m = _metrics(run_recipe(recipe, runs_root=tmp_path / "runs"), "01-adapt")
    assert m["train_documents"] == 36 and m["dev_documents"] == 12
    assert m["head_initialised"] and m["domain_eval"]["domain"]["before"] is None
    assert m["domain_eval_note"] and m["carried_from_base"] == ["bert.pooler.dense.bias", "bert.pooler.dense.weight"]


def test_empty_corpus_is_one_message(tmp_path, tiny_bert):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    recipe = _recipe(tmp_path, f"  - {{id: adapt, type: finetune, task: mlm, model: {tiny_bert}, text: {empty}}}\n")
    with pytest.raises(DataError, match="empty.txt: no text found"):
        run_recipe(recipe, runs_root=tmp_path / "runs")


def test_mlm_on_a_causal_model_is_one_message_and_exit_2(tmp_path, tiny_llama):
    import subprocess
    import sys

    text = tmp_path / "d.txt"
    text.write_text("\n\n".join(_docs(20)))
    recipe = _recipe(tmp_path, f"  - {{id: adapt, type: finetune, task: mlm, model: {tiny_llama}, text: {text}}}\n")
    with pytest.raises(ModelError, match="is a causal LM; task mlm .* use task causal_lm"):
        run_recipe(recipe, runs_root=tmp_path / "runs")
    proc = subprocess.run([sys.executable, "-m", "llmopt.cli", "run", str(recipe), "--runs-dir", str(tmp_path / "r2")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "task causal_lm" in proc.stderr and "Traceback" not in proc.stderr


def test_mlm_fields_are_checked_before_the_run():
    from pydantic import ValidationError

    from llmopt.stages.finetune import FinetuneConfig

    cfg = FinetuneConfig(id="a", task="mlm", text="x.txt")
    assert cfg.data is None and cfg.train.metric_for_best == "loss" and cfg.train.learning_rate == 5e-5
    assert cfg.model.builtin == "minilm"
    with pytest.raises(ValidationError, match="lora: task mlm"):
        FinetuneConfig(id="a", task="mlm", text="x.txt", lora={"r": 4})
    with pytest.raises(ValidationError, match="general_text"):
        FinetuneConfig(id="a", data="data", general_text="g.txt")


def test_training_loss_on_masked_positions_only_equals_the_models_own_loss(mlm_base):
    import torch

    from llmopt.models import load_tokenizer
    from llmopt.training.mlm import MlmCollator, encode_documents, load_masked_lm, masked_lm_trainer

    model, _ = load_masked_lm(mlm_base)
    model.eval()
    tok = load_tokenizer(mlm_base)
    torch.manual_seed(0)
    batch = MlmCollator(tok)([{k: e[k] for k in ("input_ids", "attention_mask", "special_tokens_mask")}
                              for e in encode_documents(tok, _docs(40), 24)])
    trainer_cls = masked_lm_trainer()
    with torch.no_grad():
        fast = trainer_cls.compute_loss(trainer_cls.__new__(trainer_cls), model, dict(batch))
        full = model(**batch).loss
    assert float(fast) == pytest.approx(float(full), rel=1e-5)
