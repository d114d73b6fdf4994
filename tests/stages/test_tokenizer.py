"""The tokenizer stage in a run: train a tokenizer and extend a model's vocabulary, then fine-tune the extended
model; its bad inputs are one clear error each."""

import json
from pathlib import Path

from llmopt.testing.bad_inputs import run_case, tokenizer_cases
from tests.conftest import make_rows, write_jsonl

DOMAIN = ["the cinemaphotonics was superb", "a scriptwrightery of cinemaphotonics", "scriptwrightery again"] * 4


def test_train_then_extend_then_finetune_the_extended_model(tmp_path, tiny_bert):
    from llmopt.pipeline import run_recipe
    from llmopt.report.render import Doc
    from llmopt.stages.tokenizer import section
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = write_jsonl(tmp_path / "d.jsonl", make_rows(60))
    extra = tmp_path / "domain.txt"
    extra.write_text("\n".join(DOMAIN) + "\n", encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
version: 1
name: tok
seed: 3
threads: 1
stages:
  - {{id: data, type: data, source: {{path: {data}}}, length_tokenizer: null}}
  - id: tok
    type: tokenizer
    texts: [{extra}]
    base: {tiny_bert}
    train: {{algorithm: unigram, vocab_size: 320, min_frequency: 1}}
    student_layers: [1]
  - {{id: extend, type: tokenizer, mode: extend, data: null, texts: [{extra}], base: {tiny_bert}, add_tokens: 3,
      min_count: 2}}
  - id: ft
    type: finetune
    data: data
    model: extend
    train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-3, max_length: 32}}
  - id: small
    type: distill
    teacher: ft
    student_model: tok
    train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-3, max_length: 32}}
""")
    run = run_recipe(recipe, runs_root=tmp_path / "runs")
    st = {p.name.split("-", 1)[1]: p for p in (run / "stages").iterdir()}
    tok_dir = st["tok"] / "artifacts" / "tokenizer"
    assert sorted(p.name for p in tok_dir.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    ours = AutoTokenizer.from_pretrained(str(tok_dir))
    assert len(ours) <= 320 and ours.tokenize("cinemaphotonics")
    m = json.loads((st["tok"] / "metrics.json").read_text())
    assert m["quality"]["vocab_size"] == len(ours) and m["base_quality"]["vocab_size"] == 30522
    assert m["quality"]["unk_rate"] == 0.0 and m["quality"]["fertility"] >= 1.0
    assert m["worst_split_words"] and m["worst_split_words"][0]["pieces"] >= m["worst_split_words"][-1]["pieces"]

    assert m["student_layers"] == [1] and m["params"] < m["base_params"]
    d = json.loads((st["small"] / "metrics.json").read_text())  # distilled across tokenizers
    assert d["student_params"] == m["params"] and d["dev_accuracy"] is not None
    assert len(AutoTokenizer.from_pretrained(str(st["small"] / "artifacts" / "model"))) == len(ours)

    e = json.loads((st["extend"] / "metrics.json").read_text())
    assert e["extend"]["added"] == 2 and e["extend"]["new_vocab"] == 30524
    assert {t["word"] for t in e["added_tokens"]} == {"cinemaphotonics", "scriptwrightery"}
    assert e["quality"]["fertility"] < e["base_quality"]["fertility"]  # the domain words are one token now
    model_dir = st["extend"] / "artifacts" / "model"
    assert AutoModelForSequenceClassification.from_pretrained(str(model_dir)).config.vocab_size == 30524
    ft = st["ft"] / "artifacts" / "model"
    assert len(AutoTokenizer.from_pretrained(str(ft))) == 30524
    doc = Doc()
    section("tok", m, doc)
    section("extend", e, doc)
    assert all(w in doc.markdown() for w in ("tokens / word", "Extended", "Student model: layers [1]"))


def test_bad_tokenizer_inputs_are_one_clear_error(tmp_path, tiny_bert):
    cases = tokenizer_cases(tmp_path, tiny_bert)
    assert len(cases) == 4
    for case in cases:
        outcome, why = run_case(case, tmp_path / "runs" / case.kind)
        assert outcome == "clear_error", (case.kind, why)
