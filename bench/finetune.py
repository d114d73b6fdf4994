"""Fine-tune the bundled MiniLM on SST-2 with llmopt and with a bare Trainer script, side by side.

Prints a table and writes bench/results/finetune.json. Reads ../shared/data/sst2; skips with a
message when it is absent. Both sides use the same hyperparameters (lr 2e-5, 3 epochs, batch 32,
max length 64, seed 42), the same data files and the same threads (torch threads, OMP/MKL/OpenBLAS
env), each in a fresh process. They run in pairs, `--repeats` times, alternating which goes first.

What is timed is the same work on both sides: process start, imports, reading the data, training
(with the per-epoch dev evaluation and best-checkpoint reload) and saving model + tokenizer:
`llmopt run` of a data + finetune recipe, and the bare script from launch to its `saved_at` stamp.
Test-set scoring is not timed: llmopt's evaluate stage (TF-IDF baseline, bootstraps, latency) runs
afterwards with `--resume` on the first llmopt run, the bare script predicts the test set after its stamp.

overhead_ratio = median over the pairs of llmopt wall / bare wall, with the min-max of the paired
ratios and, from 4 pairs on, a 95% bootstrap interval of their mean.

  .venv/bin/python bench/finetune.py                       # the full benchmark (~1 h on 2 cores)
  .venv/bin/python bench/finetune.py --max-train-rows 64 --max-eval-rows 64 --epochs 1 --repeats 1
                                                           # smoke: writes a temp file, not results/
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
OUT = ROOT / "bench" / "results" / "finetune.json"
LR, EPOCHS, BATCH, MAX_LEN, SEED = 2e-5, 3, 32, 64, 42
NAME = "bench-sst2-finetune"


def recipe(data_dir: Path, threads: int, epochs: float, evaluate: bool) -> str:
    text = f"""\
version: 1
name: {NAME}
seed: {SEED}
threads: {threads}
stages:
  - id: data
    type: data
    source: {{train: {data_dir}/train.jsonl, dev: {data_dir}/dev.jsonl, test: {data_dir}/test.jsonl}}
  - id: finetune
    type: finetune
    model: {{builtin: minilm}}
    train: {{learning_rate: {LR:.1e}, epochs: {epochs}, batch_size: {BATCH}, max_length: {MAX_LEN}}}
"""
    if evaluate:
        text += f"""\
  - id: evaluate
    type: evaluate
    models: [finetune]
    baselines: [tfidf]
    max_length: {MAX_LEN}
    latency_runs: 50
"""
    return text


def thread_env(threads: int) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def subset(src: Path, dest: Path, max_train: int | None, max_eval: int | None) -> Path:
    """The first rows of each split (the same files for both sides), or `src` itself when nothing is cut."""
    if max_train is None and max_eval is None:
        return src
    dest.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", max_train), ("dev", max_eval), ("test", max_eval)):
        lines = (src / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        (dest / f"{split}.jsonl").write_text("".join(lines[:n] if n else lines), encoding="utf-8")
    return dest


def run_bare(work: Path, data_dir: Path, threads: int, epochs: float, env: dict) -> dict:
    from llmopt.models import builtin_model_path

    res = work / "bare.json"
    cmd = [sys.executable, str(ROOT / "bench/helpers/bare_trainer.py"), "--data-dir", str(data_dir),
           "--model-dir", str(builtin_model_path("minilm")), "--out-dir", str(work / "bare"), "--result", str(res),
           "--lr", str(LR), "--epochs", str(epochs), "--batch-size", str(BATCH), "--max-length", str(MAX_LEN),
           "--seed", str(SEED), "--threads", str(threads)]
    launched = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    out = json.loads(res.read_text())
    return {**out, "wall_s": out["saved_at"] - launched}


def run_llmopt(work: Path, data_dir: Path, threads: int, epochs: float, env: dict) -> dict:
    rp = work / "recipe.yaml"
    rp.write_text(recipe(data_dir, threads, epochs, evaluate=False))
    runs = work / "runs"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmopt.cli", "run", str(rp), "--runs-dir", str(runs)],
                   check=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    run_dir = next((runs / NAME).iterdir())
    ft = json.loads((run_dir / "stages/01-finetune/metrics.json").read_text())
    return {"wall_s": wall, "run_dir": run_dir, "dev_accuracy": ft.get("dev_accuracy"),
            "epochs_run": ft.get("epochs_run"), "train_samples_per_s": ft.get("train_samples_per_second"),
            "train_runtime_s": ft.get("train_runtime_s"), "finetune_stage_s": ft.get("stage_seconds")}


def evaluate_llmopt(run_dir: Path, work: Path, data_dir: Path, threads: int, epochs: float, env: dict) -> dict:
    """Add the evaluate stage to a finished data + finetune run (those two are skipped as unchanged)."""
    rp = work / "recipe-eval.yaml"
    rp.write_text(recipe(data_dir, threads, epochs, evaluate=True))
    subprocess.run([sys.executable, "-m", "llmopt.cli", "run", str(rp), "--resume", str(run_dir)],
                   check=True, env=env, cwd=ROOT)
    return json.loads((run_dir / "stages/02-evaluate/metrics.json").read_text())


def ratio_summary(ratios: list[float], seed: int = 0, resamples: int = 10_000) -> dict:
    out = {"overhead_ratio": statistics.median(ratios), "paired_ratios": ratios,
           "overhead_ratio_range": [min(ratios), max(ratios)], "overhead_ratio_boot95": None}
    if len(ratios) >= 4:
        import numpy as np

        rng = np.random.default_rng(seed)
        r = np.asarray(ratios)
        means = r[rng.integers(0, len(r), (resamples, len(r)))].mean(axis=1)
        out["overhead_ratio_boot95"] = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
    return out


def main(argv: list[str] | None = None) -> int:
    from llmopt.runtime import default_threads

    p = argparse.ArgumentParser(description="llmopt finetune vs a bare Trainer script on SST-2")
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs (bare + llmopt), alternating the order")
    p.add_argument("--threads", type=int, default=default_threads(), help="torch and OMP/MKL threads, both sides")
    p.add_argument("--epochs", type=float, default=EPOCHS)
    p.add_argument("--max-train-rows", type=int, default=None, help="smoke setting: first N train rows")
    p.add_argument("--max-eval-rows", type=int, default=None, help="smoke setting: first N dev and test rows")
    p.add_argument("--out", type=Path, default=None,
                   help=f"result JSON (default {OUT.relative_to(ROOT)}; a temp file under a smoke setting)")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    if not (SST2 / "train.jsonl").is_file():
        print(f"skipped: {SST2} not found (the reference data lives in ../shared/data)")
        return 0
    smoke = a.max_train_rows is not None or a.max_eval_rows is not None or a.epochs != EPOCHS
    out_path = a.out or (Path(tempfile.gettempdir()) / "llmopt-bench-finetune.smoke.json" if smoke else OUT)
    env = thread_env(a.threads)

    pairs, bare_first, ev = [], None, None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = subset(SST2, tmp / "data", a.max_train_rows, a.max_eval_rows)
        for i in range(a.repeats):
            order = ("bare", "llmopt") if i % 2 == 0 else ("llmopt", "bare")
            got = {}
            for side in order:
                work = tmp / f"{i}-{side}"
                work.mkdir()
                print(f"== pair {i + 1}/{a.repeats}: {side} ({a.threads} threads)", flush=True)
                run = run_bare if side == "bare" else run_llmopt
                got[side] = run(work, data_dir, a.threads, a.epochs, env)
            if ev is None:
                ev = evaluate_llmopt(got["llmopt"]["run_dir"], tmp / f"{i}-llmopt", data_dir, a.threads, a.epochs, env)
                bare_first = got["bare"]
            got["llmopt"].pop("run_dir")
            pairs.append({"first": order[0], "llmopt": got["llmopt"], "bare": got["bare"],
                          "ratio": got["llmopt"]["wall_s"] / got["bare"]["wall_s"]})

    m, tf = ev["models"]["finetune"], ev["models"]["tfidf"]
    L0 = pairs[0]["llmopt"]
    result = {
        "dataset": ("sst2 (train 6,920 / dev 872 / test 1,821)" if not smoke else
                    f"sst2 subset (train {a.max_train_rows or 'all'}, dev/test {a.max_eval_rows or 'all'})"),
        "settings": {"model": "all-MiniLM-L6-v2", "lr": LR, "epochs": a.epochs, "batch_size": BATCH,
                     "max_length": MAX_LEN, "seed": SEED, "threads": a.threads, "repeats": a.repeats,
                     "timed": "process launch -> trained model + tokenizer saved (data + finetune on the llmopt side)"},
        "llmopt": {
            "test_accuracy": m["accuracy"], "test_accuracy_ci": m.get("accuracy_ci"),
            "macro_f1": m["macro_f1"], "macro_f1_ci": m.get("macro_f1_ci"), "n": m.get("n"),
            "dev_accuracy": L0["dev_accuracy"], "epochs_run": L0["epochs_run"],
            "wall_s": [p["llmopt"]["wall_s"] for p in pairs],
            "train_runtime_s": [p["llmopt"]["train_runtime_s"] for p in pairs],
            "train_samples_per_s": [p["llmopt"]["train_samples_per_s"] for p in pairs],
            "note": "test scores from the first run's evaluate stage (added with --resume, not timed)",
        },
        "bare_trainer": {
            "test_accuracy": bare_first["test_accuracy"], "macro_f1": bare_first["macro_f1"],
            "test_accuracy_per_run": [p["bare"]["test_accuracy"] for p in pairs],
            "wall_s": [p["bare"]["wall_s"] for p in pairs],
            "train_runtime_s": [p["bare"]["train_runtime_s"] for p in pairs],
            "train_samples_per_s": [p["bare"]["train_samples_per_s"] for p in pairs],
            "threads_seen": bare_first.get("threads"),
        },
        "tfidf": {"test_accuracy": tf["accuracy"], "test_accuracy_ci": tf.get("accuracy_ci"), "macro_f1": tf["macro_f1"]},
        **ratio_summary([p["ratio"] for p in pairs]),
        "runs": [{"pair": i + 1, "first": p["first"], "llmopt_wall_s": p["llmopt"]["wall_s"],
                  "bare_wall_s": p["bare"]["wall_s"], "ratio": p["ratio"]} for i, p in enumerate(pairs)],
        "reference": "Kim 2014 CNN on this split: 87.2-88.1% test; shared/data README MiniLM lr 2e-5: 87.3%",
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")

    L, B = result["llmopt"], result["bare_trainer"]
    print(f"\n{'pair':>4}  {'first':<7}{'llmopt wall s':>14}{'bare wall s':>13}{'ratio':>8}")
    for r in result["runs"]:
        print(f"{r['pair']:>4}  {r['first']:<7}{r['llmopt_wall_s']:>14.1f}{r['bare_wall_s']:>13.1f}{r['ratio']:>8.3f}")
    ci = L["test_accuracy_ci"] or [float("nan")] * 2
    print(f"\n{'':14}{'test acc':>22}{'macro-F1':>10}{'train s (median)':>18}{'wall s (median)':>17}")
    print(f"{'llmopt':14}{100 * L['test_accuracy']:>8.2f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
          f"{100 * L['macro_f1']:>10.2f}{statistics.median(L['train_runtime_s']):>18.1f}"
          f"{statistics.median(L['wall_s']):>17.1f}")
    print(f"{'bare Trainer':14}{100 * B['test_accuracy']:>22.2f}{100 * B['macro_f1']:>10.2f}"
          f"{statistics.median(B['train_runtime_s']):>18.1f}{statistics.median(B['wall_s']):>17.1f}")
    print(f"{'TF-IDF + LR':14}{100 * result['tfidf']['test_accuracy']:>22.2f}{100 * result['tfidf']['macro_f1']:>10.2f}")
    lo, hi = result["overhead_ratio_range"]
    boot = result["overhead_ratio_boot95"]
    print(f"overhead ratio (llmopt wall / bare wall, median of {len(pairs)} pairs): {result['overhead_ratio']:.3f}  "
          f"range [{lo:.3f}, {hi:.3f}]" + (f"  bootstrap 95% [{boot[0]:.3f}, {boot[1]:.3f}]" if boot else "")
          + f"   {a.threads} threads, n = {L['n']}")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
