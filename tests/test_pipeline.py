"""End-to-end runs on a tiny BERT and 60 rows: run-directory layout, resume, lock, report."""

import json
import os
import re
from pathlib import Path

import pytest

from llmopt.errors import RunDirError
from llmopt.pipeline import run_recipe
from llmopt.rundir import RunLock


def _recipe(tmp_path: Path, data: Path, model: Path, epochs: int = 2, extra: str = "") -> Path:
    text = f"""\
version: 1
name: tiny
seed: 3
threads: 1
stages:
  - id: data
    type: data
    source: {{path: {data}}}
  - id: finetune
    type: finetune
    model: {model}
    train:
      epochs: {epochs}
      batch_size: 16
      learning_rate: 1.0e-3
      max_length: 32
      logging_steps: 1
{extra}
  - id: evaluate
    type: evaluate
    models: [finetune]
    latency_runs: 10
    warmup: 2
    throughput_batches: 2
    max_length: 32
  - id: report
    type: report
"""
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def _files(run_dir: Path) -> set[str]:
    out = set()
    for p in run_dir.rglob("*"):
        if p.is_file():
            rel = p.relative_to(run_dir).as_posix()
            out.add(re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", rel))
    return out


CHECKPOINT_FILES = {"config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                    "trainer_state.json", "training_args.bin", "tokenizer.json", "tokenizer_config.json",
                    "llmopt-checksums.json"}


def test_tiny_end_to_end_exact_files(tmp_path, tiny_bert, tiny_data):
    run_dir = run_recipe(_recipe(tmp_path, tiny_data, tiny_bert), runs_root=tmp_path / "runs")
    assert run_dir.parent == tmp_path / "runs" / "tiny"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", run_dir.name)
    expected = {
        "recipe.yaml", "recipe.resolved.yaml", "manifest.json", "events.jsonl", "run.log",
        "stages/00-data/config.json", "stages/00-data/metrics.json", "stages/00-data/DONE",
        "stages/00-data/artifacts/train.jsonl", "stages/00-data/artifacts/dev.jsonl",
        "stages/00-data/artifacts/test.jsonl", "stages/00-data/artifacts/labels.json",
        "stages/01-finetune/config.json", "stages/01-finetune/metrics.json", "stages/01-finetune/DONE",
        "stages/01-finetune/train_log.jsonl", "stages/01-finetune/artifacts/log_history.jsonl",
        "stages/01-finetune/artifacts/model/config.json", "stages/01-finetune/artifacts/model/model.safetensors",
        "stages/01-finetune/artifacts/model/tokenizer.json", "stages/01-finetune/artifacts/model/tokenizer_config.json",
        "stages/01-finetune/artifacts/model/llmopt_inference.json",  # max_length + truncation for the predictors
        "stages/01-finetune/tensorboard/events.out.tfevents.*",
        "stages/02-evaluate/config.json", "stages/02-evaluate/metrics.json", "stages/02-evaluate/DONE",
        "stages/02-evaluate/artifacts/baselines/majority.json", "stages/02-evaluate/artifacts/baselines/tfidf.json",
        "stages/02-evaluate/artifacts/predictions/majority.jsonl",
        "stages/02-evaluate/artifacts/predictions/tfidf.jsonl",
        "stages/02-evaluate/artifacts/predictions/finetune.jsonl",
        "stages/03-report/config.json", "stages/03-report/metrics.json", "stages/03-report/DONE",
        "report/report.md", "report/report.html", "report/finetune-training-curve.svg",
        "report/evaluate-accuracy-latency.svg", "report/evaluate-size.svg", "report/evaluate-confusion-finetune.svg",
    }
    # 48 train rows, batch 16 → 3 steps an epoch, one checkpoint an epoch
    expected |= {f"stages/01-finetune/checkpoints/checkpoint-{s}/{f}" for s in (3, 6) for f in CHECKPOINT_FILES}
    # the reference's own ONNX Runtime int8 export, evaluated as a baseline: its config, tokenizer and settings files
    source = {p.name for p in (run_dir / "stages/01-finetune/artifacts/model").iterdir()}
    ort = {"config.json", "tokenizer.json", "tokenizer_config.json", "model.onnx", "onnx_model.json"}
    expected |= {f"stages/02-evaluate/artifacts/reference-ort-int8/{f}" for f in ort | ({"llmopt_inference.json"} & source)}
    expected.add("stages/02-evaluate/artifacts/predictions/finetune-ort-int8.jsonl")
    assert _files(run_dir) == expected

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["packages"]["transformers"].startswith("5.")
    assert str(tiny_data) in manifest["data_files"] and len(manifest["data_files"][str(tiny_data)]["sha256"]) == 64

    ev = json.loads((run_dir / "stages/02-evaluate/metrics.json").read_text())
    assert set(ev["models"]) == {"majority", "tfidf", "finetune", "finetune-ort-int8"}
    assert ev["models"]["finetune-ort-int8"]["kind"] == "baseline" and ev["ort_int8_baseline"] == "finetune-ort-int8"
    for m in ev["models"].values():
        assert m["n"] == 6 and m["accuracy_ci"][0] <= m["accuracy"] <= m["accuracy_ci"][1]
        assert m["latency_b1_p50_ms"] <= m["latency_b1_p95_ms"]
    assert ev["models"]["finetune"]["params"] > 900_000 and "vs_reference" in ev["models"]["tfidf"]
    preds = (run_dir / "stages/02-evaluate/artifacts/predictions/finetune.jsonl").read_text().splitlines()
    assert len(preds) == 6 and set(json.loads(preds[0])) == {"text", "label", "pred", "confidence", "probs"}

    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_pretrained(run_dir / "stages/01-finetune/artifacts/model")
    assert m.config.id2label == {0: "negative", 1: "positive"}

    html = (run_dir / "report/report.html").read_text()
    assert "<svg" in html and "tfidf" in html and "http" not in html.split("<svg")[0].replace("http-equiv", "")


def test_resume_skips_done_and_reruns_changed(tmp_path, tiny_bert, tiny_data, capsys):
    recipe = _recipe(tmp_path, tiny_data, tiny_bert, epochs=1)
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    done_before = {p: (p / "DONE").stat().st_mtime_ns for p in (run_dir / "stages").iterdir()}
    capsys.readouterr()

    again = run_recipe(recipe, runs_root=tmp_path / "runs", resume="latest")
    assert again == run_dir
    err = capsys.readouterr().err
    assert err.count("skipped   (done earlier)") == 4
    assert all((p / "DONE").stat().st_mtime_ns == t for p, t in done_before.items())

    # a changed evaluate config reruns evaluate and the report, not data or finetune
    run_recipe(recipe, ["stages.evaluate.latency_runs=12"], runs_root=tmp_path / "runs", resume=str(run_dir))
    err = capsys.readouterr().err
    assert re.search(r"data +skipped +\(done earlier\)", err) and re.search(r"finetune +skipped +\(done earlier\)", err)
    assert "evaluate (evaluate): config or inputs changed" in err and "report (report): config or inputs changed" in err
    ev = json.loads((run_dir / "stages/02-evaluate/metrics.json").read_text())
    assert ev["models"]["finetune"]["latency_b1_n"] == 12
    resolved = (run_dir / "recipe.resolved.yaml").read_text()
    assert "latency_runs: 12" in resolved


def test_a_stage_inserted_before_others_keeps_their_work(tmp_path, tiny_bert, tiny_data, capsys):
    """Inserting a stage shifts the later stages' folders (01-finetune → 02-finetune): they are renamed and
    skipped, not retrained; a recorded model path still resolves for serving."""
    from llmopt.serve.models import _entry_folder

    recipe = _recipe(tmp_path, tiny_data, tiny_bert, epochs=1)
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    done = (run_dir / "stages/01-finetune/DONE").stat().st_mtime_ns
    text = recipe.read_text().replace("  - id: finetune\n", f"  - id: data_copy\n    type: data\n"
                                      f"    source: {{path: {tiny_data}}}\n  - id: finetune\n")
    recipe.write_text(text)
    capsys.readouterr()
    run_recipe(recipe, runs_root=tmp_path / "runs", resume=str(run_dir))
    err = capsys.readouterr().err
    assert re.search(r"finetune +skipped +\(done earlier\)", err) and re.search(r"evaluate +skipped", err)
    assert "moved in the recipe (01-finetune → 02-finetune)" in err
    assert sorted(p.name for p in (run_dir / "stages").iterdir()) == [
        "00-data", "01-data_copy", "02-finetune", "03-evaluate", "04-report"]
    assert (run_dir / "stages/02-finetune/DONE").stat().st_mtime_ns == done
    ev = json.loads((run_dir / "stages/03-evaluate/metrics.json").read_text())
    assert "/01-finetune/" in ev["models"]["finetune"]["path"]  # recorded before the move
    assert _entry_folder(ev["models"]["finetune"], run_dir) == run_dir / "stages/02-finetune/artifacts/model"


def test_editing_a_data_file_in_place_reruns_data_and_everything_after(tmp_path, tiny_bert, tiny_data, capsys):
    recipe = _recipe(tmp_path, tiny_data, tiny_bert, epochs=1)
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    before = json.loads((run_dir / "stages/00-data/metrics.json").read_text())
    rows = tiny_data.read_text().splitlines()
    tiny_data.write_text("\n".join(rows[:-4]) + "\n")  # same path, same recipe, other content
    capsys.readouterr()
    run_recipe(recipe, runs_root=tmp_path / "runs", resume=str(run_dir))
    err = capsys.readouterr().err
    for label in ("data (data)", "finetune (finetune)", "evaluate (evaluate)", "report (report)"):
        assert f"{label}: config or inputs changed — running again" in err, label
    after = json.loads((run_dir / "stages/00-data/metrics.json").read_text())
    assert sum(after["rows"].values()) == sum(before["rows"].values()) - 4
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["action"] for e in events if e["stage"] == "data"] == ["started", "done", "started", "done"]


def test_interrupted_finetune_resumes_from_checkpoint(tmp_path, tiny_bert, tiny_data, capsys):
    recipe = _recipe(tmp_path, tiny_data, tiny_bert, epochs=2)
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    ft = run_dir / "stages/01-finetune"
    full = json.loads((ft / "metrics.json").read_text())
    # simulate a crash after the first epoch's checkpoint: drop DONE, the final model and the last checkpoint
    (ft / "DONE").unlink()
    (ft / "metrics.json").unlink()
    import shutil

    shutil.rmtree(ft / "artifacts")
    shutil.rmtree(ft / "checkpoints/checkpoint-6")
    capsys.readouterr()
    run_recipe(recipe, runs_root=tmp_path / "runs", resume=str(run_dir))
    err = capsys.readouterr().err
    assert "finetune (finetune): resuming an interrupted stage" in err
    resumed = json.loads((ft / "metrics.json").read_text())
    assert resumed["resumed_from"].endswith("checkpoint-3")
    assert resumed["resumed_at_step"] == 3 and resumed["steps_trained_now"] == 3  # not from scratch
    assert resumed["global_steps"] == full["global_steps"] == 6
    assert resumed["dev_accuracy"] == pytest.approx(full["dev_accuracy"])
    assert resumed["best_metric"] == pytest.approx(full["best_metric"])


def test_lock_refuses_live_owner_and_takes_over_stale(tmp_path):
    (tmp_path / ".lock").write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(RunDirError, match=f"pid {os.getppid()}"):
        with RunLock(tmp_path):
            pass
    (tmp_path / ".lock").write_text("999999999")  # no such pid: stale
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_resume_of_unknown_dir(tmp_path, tiny_bert, tiny_data):
    with pytest.raises(RunDirError, match="not an llmopt run directory"):
        run_recipe(_recipe(tmp_path, tiny_data, tiny_bert), runs_root=tmp_path / "runs", resume=str(tmp_path))
