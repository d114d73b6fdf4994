"""The console: library output goes to run.log, one line per stage, a results table at the end."""

import io
import json
import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

from llmopt import console
from tests.conftest import write_tiny_quantize_recipe

ROOT = Path(__file__).resolve().parents[1]


def _recipe(tmp_path: Path, data: Path, model: Path) -> Path:
    return write_tiny_quantize_recipe(tmp_path / "tiny.yaml", data, model, epochs=2)


def test_run_console_is_quiet_and_library_output_goes_to_run_log(tmp_path, tiny_bert, tiny_data):
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "llmopt.cli", "run", str(_recipe(tmp_path, tiny_data, tiny_bert)),
                           "--runs-dir", str(runs)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    shown = done.stdout + done.stderr
    assert done.returncode == 0, shown
    assert "{'loss':" not in shown and '"loss"' not in shown  # no raw Trainer dicts
    assert not [ln for ln in shown.splitlines() if re.search(r"warn", ln, re.IGNORECASE)], shown
    assert "it/s]" not in shown and "%|" not in shown  # no tqdm bars
    assert "\x1b[" not in shown  # not a terminal: plain lines, no escape codes
    for sid in ("data", "finetune", "quantize", "evaluate", "report"):
        assert re.search(rf"^\[llmopt\] ✓ {sid} +[0-9.]+ s", done.stderr, re.MULTILINE), sid
    assert re.search(r"✓ finetune .* dev acc \d+\.\d%", done.stderr)
    assert re.search(r"finetune: step 6/6 +dev acc", done.stderr)  # the plain form of the live line
    # the results table on stdout, then the report
    assert "accuracy (95% CI)" in done.stdout and "×smaller" in done.stdout
    assert re.search(r"^  finetune \(ref\) +\d+\.\d% \[", done.stdout, re.MULTILINE)
    assert re.search(r"^  quantize +.* [✓✗] ", done.stdout, re.MULTILINE)  # its speed gate
    assert done.stdout.rstrip().splitlines()[-1].startswith("report: ")

    (run_dir,) = (runs / "tiny").iterdir()
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert "TracerWarning" in log  # torch.onnx.export's Python warning
    assert "Please consider to run pre-processing" in log  # onnxruntime's quantizer, through `logging`
    assert re.search(r"Loading weights: 100%.*41/41", log)  # a tqdm bar: its last state only
    assert "\r" not in log and "\x1b[" not in log
    assert re.search(r'trainer finetune step 1: \{"loss"', log)  # the Trainer's logs
    assert "✓ finetune" in log


def test_capture_sends_library_output_to_run_log_and_restores(tmp_path, capsys):
    from tqdm import tqdm

    lib = logging.getLogger("fake_library")
    handler = logging.StreamHandler(sys.stderr)  # a library's handler made before the run
    lib.addHandler(handler)
    try:
        with console.capture(tmp_path):
            warnings.warn("a library warning", UserWarning)
            lib.warning("a library log record")
            logging.getLogger("fake_other").warning("to the root logger")
            for _ in tqdm(range(3), desc="a bar"):
                pass
            print("a stray print")
            console.note("a note for the user")
        assert handler.stream is sys.stderr  # given back its stream
    finally:
        lib.removeHandler(handler)
    out = capsys.readouterr()
    assert out.err == "[llmopt] a note for the user\n" and out.out == ""
    log = (tmp_path / "run.log").read_text()
    for text in ("UserWarning: a library warning", "a library log record", "WARNING fake_other: to the root logger",
                 "a stray print", "a note for the user"):
        assert text in log, text
    assert re.search(r"a bar: 100%.*3/3", log) and "\r" not in log
    print("after the run")
    assert capsys.readouterr().out == "after the run\n"


def test_verbose_also_shows_library_output(tmp_path, capsys):
    console.configure(verbose=True)
    try:
        with console.capture(tmp_path):
            warnings.warn("shown when verbose", UserWarning)
    finally:
        console.configure(verbose=False)
    assert "shown when verbose" in capsys.readouterr().err
    assert "shown when verbose" in (tmp_path / "run.log").read_text()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_line_on_a_terminal_moves_with_training(tmp_path, monkeypatch):
    term = _Tty()
    monkeypatch.setattr(sys, "stderr", term)
    for var in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR", "TERM"):
        monkeypatch.delenv(var, raising=False)
    with console.capture(tmp_path):
        console.stage_started("[2/4] finetune (finetune)", "finetune")
        progress, task = console._state["progress"], console._state["task"]
        assert progress is not None
        cb = console.training_callback()
        cb.on_train_begin(None, SimpleNamespace(max_steps=10, global_step=0), None)
        cb.on_step_end(None, SimpleNamespace(max_steps=10, global_step=4), None)
        cb.on_evaluate(None, SimpleNamespace(max_steps=10, global_step=4), None, metrics={"eval_accuracy": 0.8})
        t = progress.tasks[0]
        assert (t.total, t.completed, t.fields["metric"]) == (10, 4, "dev acc 80.0%")
        console.stage_done("finetune", 98.2, {"dev_accuracy": 0.791})
        assert console._state["progress"] is None
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.getvalue())
    assert "✓ finetune         98 s   dev acc 79.1%" in shown
    assert "[2/4] finetune " in shown and "(finetune)" not in shown  # the label without its repeated type
    assert re.search(r"\[2/4\] finetune [━╺╸]+ 4/10 steps +dev acc 80.0%", shown)  # the live line was drawn


def test_a_failing_stage_gets_a_failed_line(tmp_path, capsys):
    try:
        with console.capture(tmp_path):
            console.stage_started("[1/2] data (data)", "data")
            raise ValueError("boom")
    except ValueError:
        pass
    assert re.search(r"✗ data +failed +after", capsys.readouterr().err)


def test_results_table_reference_values(tmp_path):
    sdir = tmp_path / "stages" / "02-evaluate"
    sdir.mkdir(parents=True)
    entry = {"kind": "model", "accuracy": 0.8, "accuracy_ci": [0.75, 0.85]}
    metrics = {"split": "test", "n": 1276, "reference": "finetune", "models": {
        "finetune": {**entry, "latency_b1_p50_ms": 12.0, "weights_bytes": 90_000_000, "size_bytes": 91_000_000},
        "quantize": {**entry, "accuracy": 0.79, "latency_b1_p50_ms": 3.0, "weights_bytes": 22_500_000,
                     "gate": {"parent": "prune", "passed": True, "faster": True, "smaller": True, "verdict": "faster"}},
        "prune": {**entry, "latency_b1_p50_ms": 6.0, "weights_bytes": 45_000_000,
                  "gate": {"parent": "distill", "passed": False, "faster": False, "smaller": True,
                           "verdict": "no measurable difference"}},
        "majority": {"kind": "baseline", "accuracy": 0.5, "accuracy_ci": [0.47, 0.53], "latency_b1_p50_ms": 0.001,
                     "size_bytes": 35, "weights_bytes": None},
    }}
    (sdir / "metrics.json").write_text(json.dumps(metrics))
    (sdir / "config.json").write_text(json.dumps({"id": "evaluate", "type": "evaluate"}))
    (sdir / "DONE").write_text("{}")
    table = console.results_table(tmp_path)
    rows = {ln.split()[0]: ln for ln in table.splitlines()[2:] if ln.startswith("  ")}
    assert table.splitlines()[-1].startswith("Recommended: quantize — ")  # the report's answer, in one line
    assert "1,276 test rows" in table.splitlines()[0] and "than finetune" in table.splitlines()[0]
    assert re.search(r"80\.0% \[75\.0, 85\.0\] +12\.00 +90\.0 +1\.0 +1\.0", rows["finetune"])
    assert re.search(r"79\.0% .* 3\.00 +22\.5 +4\.0 +4\.0 +✓ vs prune$", rows["quantize"])
    assert re.search(r"6\.00 +45\.0 +2\.0 +2\.0 +✗ vs distill: not faster$", rows["prune"])
    assert re.search(r"0\.00 +– +– +baseline", rows["majority"])
    assert list(rows) == ["finetune", "quantize", "prune", "majority"]  # models first, then baselines


def test_verbose_shows_the_trainers_logs(tmp_path, capsys):
    console.configure(verbose=True)
    try:
        with console.capture(tmp_path):
            console.stage_started("[1/1] ft (finetune)", "ft")
            console.training_callback().on_log(None, SimpleNamespace(global_step=3), None, logs={"loss": 0.5})
    finally:
        console.configure(verbose=False)
    assert 'trainer ft step 3: {"loss": 0.5}' in capsys.readouterr().err
    assert 'trainer ft step 3: {"loss": 0.5}' in (tmp_path / "run.log").read_text()


def test_causal_models_get_their_own_table_lines() -> None:
    from llmopt.console import _causal_lines, summary

    ev = {"causal": {"models": {
        "builtin:smollm2-135m": {"runtime": "transformers fp32 eager", "ppl": 26.13, "ppl_ci": [24.0, 28.5],
                                 "prefill_tok_s": 410.0, "decode_tok_s": 17.1, "size_bytes": 538_000_000},
        "sft": {"runtime": "transformers fp32 eager", "ppl": 30.2, "ppl_ci": None, "prefill_tok_s": 400.0,
                "decode_tok_s": 16.8, "size_bytes": 538_000_000, "classification": {"accuracy": 0.873}}}}}
    lines = _causal_lines("evaluate_lm", ev)
    assert "perplexity (95% CI)" in lines[1] and "26.13 [24.00, 28.50]" in lines[2] and "17.1" in lines[2]
    assert "87.3%" in lines[3] and lines[2].split()[0] == "builtin:smollm2-135m"
    assert summary(ev) == "2 causal LMs"
    assert summary({"dev_perplexity": 3.456}) == "dev perplexity 3.46"
