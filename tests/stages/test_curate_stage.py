"""The curate stage in the pipeline: `data: curate` feeds a fine-tune; a kill mid-curate resumes with nothing lost."""

import json
from pathlib import Path

import pytest

from llmopt.errors import RecipeError
from llmopt.recipe import parse_recipe
from llmopt.testing.crash import events, partial_files, run_cli
from tests.conftest import write_jsonl


WORDS = ("film story actor scene plot music camera script comedy drama ending hero villain city night love "
         "war family river school music dark bright slow quick funny sad warm cold loud quiet strange simple "
         "grand small brave gentle wild calm bitter sweet clever dull fresh tired").split()


def varied_rows(n: int, seed: int = 3) -> list[dict]:
    """n labelled 12-word sentences drawn at random: no two are near duplicates."""
    import random

    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS) for _ in range(12)), "label": ("positive", "negative")[i % 2]}
            for i in range(n)]


def noisy_rows(n: int) -> list[dict]:
    rows = varied_rows(n)
    rows += [dict(rows[i]) for i in range(0, 40, 4)]                                     # 10 exact copies
    rows += [{"text": f"<p>{r['text'].upper()}</p>", "label": r["label"]} for r in rows[1:20:4]]  # 5 html + case
    rows += [{"text": "$$$ 123 456 !!!", "label": "positive"}, {"text": "12/10 ***", "label": "negative"}]  # 2 junk
    return rows


def recipe(path: Path, data: Path, model: Path, chunk_rows: int = 100, with_finetune: bool = True) -> Path:
    ft = f"""
  - id: finetune
    type: finetune
    data: curate
    model: {model}
    train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-3, max_length: 32}}""" if with_finetune else ""
    path.write_text(f"""\
version: 1
name: cur
seed: 5
threads: 1
stages:
  - {{id: data, type: data, source: {{path: {data}}}, length_tokenizer: null}}
  - {{id: curate, type: curate, data: data, chunk_rows: {chunk_rows}}}{ft}
""")
    return path


def _stage(run_dir: Path, sid: str) -> Path:
    return next(run_dir.glob(f"stages/*-{sid}"))


def test_finetune_takes_data_curate(tmp_path, tiny_bert):
    from llmopt.pipeline import run_recipe

    data = write_jsonl(tmp_path / "d.jsonl", noisy_rows(200))
    run_dir = run_recipe(recipe(tmp_path / "r.yaml", data, tiny_bert), runs_root=tmp_path / "runs")
    cur = json.loads((_stage(run_dir, "curate") / "metrics.json").read_text())
    ft = json.loads((_stage(run_dir, "finetune") / "metrics.json").read_text())
    assert ft["n_train"] == cur["rows_out"]["train"] < cur["rows_in"]["train"]
    d = cur["dropped"]
    # the data stage split the copies between train, dev and test; every copy is gone from train one way or another
    assert d["non_alphabetic"] == 2 and d.get("exact_duplicate", 0) + d.get("contamination_exact", 0) >= 5
    assert set(d) <= {"non_alphabetic", "exact_duplicate", "contamination_exact"}
    assert cur["changed"]["html"] >= 1
    arts = {p.name for p in (_stage(run_dir, "curate") / "artifacts").iterdir()}
    assert arts == {"train.jsonl", "dev.jsonl", "test.jsonl", "labels.json", "dropped.jsonl", "changed.jsonl",
                    "conflicts.jsonl"}
    # dev/test are the data stage's, byte for byte
    for split in ("dev", "test"):
        assert (_stage(run_dir, "curate") / f"artifacts/{split}.jsonl").read_bytes() == \
            (_stage(run_dir, "data") / f"artifacts/{split}.jsonl").read_bytes()


def test_report_section_shows_counts_and_examples(tmp_path):
    from llmopt.stages import STAGES

    calls = []

    class Doc:
        def h(self, level, text): calls.append(("h", text))
        def p(self, text): calls.append(("p", text))
        def table(self, head, rows): calls.append(("table", head, rows))

    m = {"source_stage": "data", "rows_in": {"train": 10, "dev": 2, "test": 2}, "rows_out": {"train": 8},
         "label_conflicts": {"policy": "majority", "groups": 0, "rows": 0},
         "dedup": {"key": "canonical", "num_perm": 128, "shingle": 5, "unit": "char", "threshold": 0.7,
                   "lsh_bands": 14, "keep": "first"},
         "dropped": {"exact_duplicate": 2}, "changed": {"html": 1},
         "examples": {"exact_duplicate": [{"id": "train-3", "text": "a film", "duplicate_of": "train-1"}],
                      "changed:html": [{"id": "train-4", "before": "<b>x</b>", "after": "x"}]}}
    STAGES["curate"].section("curate", m, Doc())
    tables = [c for c in calls if c[0] == "table"]
    assert ["exact_duplicate", "2"] in tables[0][2] and ["html", "1"] in tables[1][2]
    assert tables[2][2][0] == ["exact_duplicate", "train-3", "a film", "", "train-1 (None)"]
    assert tables[2][2][1] == ["changed:html", "train-4", "<b>x</b>", "x", ""]
    assert any("10 in, 8 kept, 2 dropped" in c[1] for c in calls if c[0] == "p")


def test_impossible_filter_range_names_the_key():
    text = """version: 1
name: x
seed: 1
stages:
  - {id: data, type: data, source: {builtin: rotten_tomatoes}}
  - id: curate
    type: curate
    filters: {min_words: 9, max_words: 3}
"""
    with pytest.raises(RecipeError, match=r"stages\[1\]\.filters.*min_words \(9\) is greater than max_words \(3\)"):
        parse_recipe(text, "r.yaml")


def test_kill_during_curate_resumes_with_nothing_lost(tmp_path, tiny_bert):
    data = write_jsonl(tmp_path / "d.jsonl", noisy_rows(600))
    rec = recipe(tmp_path / "r.yaml", data, tiny_bert, chunk_rows=100, with_finetune=False)
    ref = run_cli(["run", str(rec), "--runs-dir", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    killed = run_cli(["run", str(rec), "--runs-dir", str(tmp_path / "runs")], fault="curate.chunk:2")
    assert killed.returncode == -9, killed.stderr
    run_dir = next((tmp_path / "runs").glob("*/*"))
    assert partial_files(run_dir) == []
    assert len(list((_stage(run_dir, "curate") / "work").glob("pass1-*.jsonl"))) == 2
    again = run_cli(["run", str(rec), "--runs-dir", str(tmp_path / "runs"), "--resume", str(run_dir)])
    assert again.returncode == 0, again.stderr
    actions = {e["stage"]: e["action"] for e in events(run_dir) if e.get("pid") != killed_pid(run_dir)}
    assert actions["data"] == "skipped" and actions["curate"] == "done"
    assert any(e["stage"] == "curate" and e["action"] == "resumed" for e in events(run_dir))
    m = json.loads((_stage(run_dir, "curate") / "metrics.json").read_text())
    assert m["chunks_reused"] == 2 and m["chunks"] == 5
    assert not (_stage(run_dir, "curate") / "work").exists()  # removed once the outputs were complete
    ref_dir = next((tmp_path / "ref").glob("*/*"))
    ref_m = json.loads((_stage(ref_dir, "curate") / "metrics.json").read_text())
    assert m["dropped"] == ref_m["dropped"] and m["rows_out"] == ref_m["rows_out"]
    for name in ("train.jsonl", "dropped.jsonl", "changed.jsonl", "dev.jsonl", "test.jsonl"):
        assert (_stage(run_dir, "curate") / "artifacts" / name).read_bytes() == \
            (_stage(ref_dir, "curate") / "artifacts" / name).read_bytes(), name
    assert partial_files(run_dir) == []


def killed_pid(run_dir: Path) -> int:
    return events(run_dir)[0].get("pid")
