"""Fine-tune the bundled MiniLM on SST-2 with llmopt and with a bare Trainer script, side by side.

Prints a table and writes bench/results/finetune.json. Reads ../shared/data/sst2; skips with a
message when it is absent. Both runs use the same hyperparameters (lr 2e-5, 3 epochs, batch 32,
max length 64, seed 42) and the same threads, one after the other in this one process tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
OUT = ROOT / "bench" / "results" / "finetune.json"
LR, EPOCHS, MAX_LEN, SEED = 2e-5, 3, 64, 42

RECIPE = f"""\
version: 1
name: bench-sst2-finetune
seed: {SEED}
stages:
  - id: data
    type: data
    source: {{train: {SST2}/train.jsonl, dev: {SST2}/dev.jsonl, test: {SST2}/test.jsonl}}
  - id: finetune
    type: finetune
    model: {{builtin: minilm}}
    learning_rate: {LR}
    epochs: {EPOCHS}
    batch_size: 32
    max_length: {MAX_LEN}
  - id: evaluate
    type: evaluate
    models: [finetune]
    baselines: [tfidf]
    max_length: {MAX_LEN}
    latency_runs: 50
"""


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> int:
    if not (SST2 / "train.jsonl").is_file():
        print(f"skipped: {SST2} not found (the reference data lives in ../shared/data)")
        return 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    from llmopt.models import builtin_model_path

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # bare Trainer first, then llmopt, each in a fresh process (imports and start-up counted in both)
        bare_json = tmp / "bare.json"
        bare_wall = timed([sys.executable, str(ROOT / "bench/helpers/bare_trainer.py"), str(SST2),
                           str(builtin_model_path("minilm")), str(tmp / "bare"), str(LR), str(EPOCHS),
                           str(MAX_LEN), str(SEED), str(bare_json)], env)
        bare = json.loads(bare_json.read_text())

        recipe = tmp / "recipe.yaml"
        recipe.write_text(RECIPE)
        runs = tmp / "runs"
        llm_wall = timed([sys.executable, "-m", "llmopt.cli", "run", str(recipe), "--runs-dir", str(runs)], env)
        run_dir = next((runs / "bench-sst2-finetune").iterdir())
        ft = json.loads((run_dir / "stages/01-finetune/metrics.json").read_text())
        ev = json.loads((run_dir / "stages/02-evaluate/metrics.json").read_text())

    m, tf = ev["models"]["finetune"], ev["models"]["tfidf"]
    result = {
        "dataset": "sst2 (train 6,920 / dev 872 / test 1,821)",
        "settings": {"model": "all-MiniLM-L6-v2", "lr": LR, "epochs": EPOCHS, "batch_size": 32,
                     "max_length": MAX_LEN, "seed": SEED, "threads": ev["threads"]},
        "llmopt": {
            "test_accuracy": m["accuracy"], "test_accuracy_ci": m["accuracy_ci"],
            "macro_f1": m["macro_f1"], "macro_f1_ci": m["macro_f1_ci"], "n": m["n"],
            "dev_accuracy": ft["dev_accuracy"], "epochs_run": ft["epochs_run"],
            "train_samples_per_s": ft["train_samples_per_second"], "train_runtime_s": ft["train_runtime_s"],
            "wall_s": llm_wall,
            "note": "wall includes data split, training, saving, and the evaluate stage (TF-IDF, bootstrap, latency)",
        },
        "bare_trainer": {
            "test_accuracy": bare["test_accuracy"], "macro_f1": bare["macro_f1"],
            "train_samples_per_s": bare["train_samples_per_s"], "train_runtime_s": bare["train_runtime_s"],
            "wall_s": bare_wall,
        },
        "tfidf": {"test_accuracy": tf["accuracy"], "test_accuracy_ci": tf["accuracy_ci"], "macro_f1": tf["macro_f1"]},
        "overhead_ratio": llm_wall / bare_wall,
        "reference": "Kim 2014 CNN on this split: 87.2-88.1% test; shared/data README MiniLM lr 2e-5: 87.3%",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    L, B = result["llmopt"], result["bare_trainer"]
    print(f"{'':14}{'test acc':>22}{'macro-F1':>10}{'train samples/s':>17}{'wall s':>9}")
    print(f"{'llmopt':14}{100 * L['test_accuracy']:>8.2f} [{100 * L['test_accuracy_ci'][0]:.1f}, "
          f"{100 * L['test_accuracy_ci'][1]:.1f}]{100 * L['macro_f1']:>10.2f}{L['train_samples_per_s']:>17.1f}{L['wall_s']:>9.0f}")
    print(f"{'bare Trainer':14}{100 * B['test_accuracy']:>22.2f}{100 * B['macro_f1']:>10.2f}"
          f"{B['train_samples_per_s']:>17.1f}{B['wall_s']:>9.0f}")
    print(f"{'TF-IDF + LR':14}{100 * result['tfidf']['test_accuracy']:>22.2f}{100 * result['tfidf']['macro_f1']:>10.2f}")
    print(f"overhead ratio (llmopt wall / bare wall): {result['overhead_ratio']:.3f}   n = {L['n']}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
