"""The prompt stage through the real pipeline on a tiny Llama: grid × repeats on dev, paired test against
zero-shot, the best saved and scored once on test, a rerun served from the cache, the saved prompt reused
(`from_artifact`), the fine-tuned models of the run read beside it; one slow test with the real SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmopt.pipeline import run_recipe
from tests.conftest import make_rows, write_jsonl

VARIANTS = """\
    variants:
      - name: plain
        template: "Is this review {{ labels }}? {{ text }}"
        label_words: {positive: good, negative: bad}
      - name: critic
        system: "You are a critic."
        context: "Short movie reviews."
        template: "{{ context }}\\nReview: {{ text }}\\nAnswer {{ labels }}."
"""


def _recipe(path: Path, data: Path, model: Path, body: str) -> Path:
    path.write_text(f"""\
version: 1
name: prompt-tiny
seed: 5
threads: 1
stages:
  - {{id: data, type: data, source: {{path: {data}}}, split: {{dev: 0.2, test: 0.2}}, length_tokenizer: null}}
  - id: prompt
    type: prompt
    backend: {{type: local, model: {model}}}
{body}
  - {{id: report, type: report}}
""", encoding="utf-8")
    return path


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "stages" / "01-prompt" / "metrics.json").read_text())


def test_tiny_grid_best_on_dev_once_on_test_cached_rerun_and_reuse(tmp_path: Path, tiny_llama: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPT_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "rows.jsonl", make_rows(50))
    body = VARIANTS + "    shots: [0, 2]\n    strategies: [random, balanced, nearest]\n    repeats: 2\n"
    recipe = _recipe(tmp_path / "p.yaml", data, tiny_llama, body)
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    m = _metrics(run_dir)
    names = [r["name"] for r in m["variants"]]
    assert names == ["plain zero-shot", "plain 2-shot random", "plain 2-shot balanced", "plain 2-shot nearest",
                     "critic zero-shot", "critic 2-shot random", "critic 2-shot balanced", "critic 2-shot nearest"]
    n_dev = m["n_dev"]
    for r in m["variants"]:
        # nearest over the whole (30-row) train split draws the same examples every time: one pass
        assert r["repeats"] == (1 if r["k"] == 0 or r["strategy"] == "nearest" else 2) and r["n"] == n_dev
        assert r["ci"][0] <= r["accuracy"] <= r["ci"][1] and len(r["accuracy_per_repeat"]) == r["repeats"]
        assert (r["p_vs_zero_shot"] is None) == (r["name"] == "plain zero-shot")
    # every row of every pass was one model call, and nothing was cached on the first run
    test_passes = 1 if m["best"] == "plain zero-shot" else 2  # the chosen prompt, and zero-shot beside it
    assert m["calls"] == n_dev * (2 + 2 * (2 + 2 + 1)) + test_passes * m["test"]["n"]
    assert m["cache"]["hits"] == 0 and ("zero_shot" in m["test"]) == (test_passes == 2)
    best = max(m["variants"], key=lambda r: (r["accuracy"], -r["k"]))
    assert m["best"] == best["name"] and m["test"]["name"] == best["name"] and m["test"]["repeats"] == 1
    art = json.loads((run_dir / "stages/01-prompt/artifacts/prompt.json").read_text())
    assert art["format"] == "llmopt-prompt/1" and art["name"] == m["best"] and art["labels"] == ["negative", "positive"]
    assert {"template", "label_words", "examples", "k", "strategy", "system"} <= set(art)
    report = (run_dir / "report" / "report.md").read_text()
    assert "Prompting (prompt)" in report and "p vs zero-shot" in report and m["best"] + " ★" in report

    # a fresh run of the same recipe: every call from the cache, the same numbers
    again = _metrics(run_recipe(recipe, runs_root=tmp_path / "runs2"))
    assert again["calls"] == 0 and again["cache"]["misses"] == 0
    assert [r["accuracy"] for r in again["variants"]] == [r["accuracy"] for r in m["variants"]]

    # the saved prompt reused: scored on the same test rows, the same accuracy as the run that chose it
    saved = tmp_path / "prompt.json"
    saved.write_text(json.dumps(art))
    reuse = _recipe(tmp_path / "r.yaml", data, tiny_llama, f"    from_artifact: {saved}\n")
    r = _metrics(run_recipe(reuse, runs_root=tmp_path / "runs3"))
    assert r["from_artifact"] == str(saved) and r["test"]["accuracy"] == m["test"]["accuracy"]
    assert "variants" not in r


def test_a_template_field_the_rows_lack_stops_the_stage_naming_it(tmp_path: Path, tiny_llama: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from llmopt.errors import DataError

    monkeypatch.setenv("LLMOPT_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "rows.jsonl", make_rows(20))
    body = '    variants: [{name: v, template: "{{ title }}: {{ text }}"}]\n    shots: [0]\n'
    with pytest.raises(DataError, match="no field 'title'"):
        run_recipe(_recipe(tmp_path / "p.yaml", data, tiny_llama, body), runs_root=tmp_path / "runs")


def test_config_rejects_loglik_over_http_and_an_empty_grid():
    from pydantic import ValidationError

    from llmopt.stages.prompt import PromptConfig

    with pytest.raises(ValidationError, match="method: generate"):
        PromptConfig(id="p", variants=[{"name": "v", "template": "{{ text }}"}],
                     backend={"type": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"})
    with pytest.raises(ValidationError, match="variants"):
        PromptConfig(id="p")
    cfg = PromptConfig(id="p", variants=[{"name": "v", "template": "{{ text }}"}], compare_with=["evaluate"])
    assert cfg.inputs().stages == ["data", "evaluate"] and cfg.inputs().models == ["builtin:smollm2-135m"]


def test_finetuned_models_are_read_from_the_runs_evaluate_metrics(tmp_path: Path) -> None:
    from llmopt.stages.base import StageContext
    from llmopt.stages.prompt import PromptConfig, _finetuned

    ev = tmp_path / "evaluate"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({
        "split": "test", "n": 10, "models": {"minilm": {"accuracy": 0.8, "accuracy_ci": [0.7, 0.9], "macro_f1": 0.79}},
        "causal": {"split": "test", "models": {"sft": {"classification": {
            "accuracy": 0.9, "accuracy_ci": [0.8, 1.0], "macro_f1": 0.9, "n": 10}}, "ppl_only": {"ppl": 3.0}}}}))
    ctx = StageContext(run_dir=tmp_path, stage_dir=tmp_path / "p", seed=0, threads=1, stage_dirs={"evaluate": ev})
    cfg = PromptConfig(id="p", variants=[{"name": "v", "template": "{{ text }}"}], compare_with=["evaluate"])
    got = _finetuned(cfg, ctx)
    assert got == {"minilm": {"stage": "evaluate", "accuracy": 0.8, "ci": [0.7, 0.9], "macro_f1": 0.79, "n": 10},
                   "sft": {"stage": "evaluate", "accuracy": 0.9, "ci": [0.8, 1.0], "macro_f1": 0.9, "n": 10}}


@pytest.mark.slow
def test_real_smollm2_scores_a_handful_of_sentiment_rows(tmp_path: Path) -> None:
    """The bundled SmolLM2-135M-Instruct, zero-shot by label log-likelihood, on 8 clear reviews: better than chance."""
    import numpy as np

    from llmopt.llm import smollm2_path
    from llmopt.prompting.backends import LocalHF
    from llmopt.prompting.run import predict
    from llmopt.prompting.templates import PromptTemplate

    rows = [{"text": t, "label": lab} for t, lab in [
        ("an absolute masterpiece, i loved every minute", "positive"), ("wonderful, moving and funny", "positive"),
        ("the best film of the year", "positive"), ("brilliant acting and a great story", "positive"),
        ("a boring, tedious waste of time", "negative"), ("awful acting and a terrible plot", "negative"),
        ("i hated it, the worst film this year", "negative"), ("dull, flat and far too long", "negative")]]
    labels = ["negative", "positive"]
    t = PromptTemplate(name="plain", label_words={"negative": "negative", "positive": "positive"},
                       template="Is the sentiment of this movie review positive or negative? Answer with one word: "
                                "{{ labels }}.\n\nReview: {{ text }}")
    b = LocalHF(smollm2_path(), threads=2)
    out = predict(b, t, rows, labels, "loglik", lambda i, r: [])
    acc = float(np.mean(np.asarray(out["preds"]) == np.asarray([labels.index(r["label"]) for r in rows])))
    assert acc >= 0.75, (acc, out["preds"])
    gen = predict(b, t, rows[:2], labels, "generate", lambda i, r: [], max_new_tokens=4)
    assert len(gen["answers"]) == 2 and gen["unparseable"] <= 2
