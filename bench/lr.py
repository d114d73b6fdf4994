"""`learning_rate: auto` against a fixed 2e-5 and against the best of a full grid, on SST-2 with MiniLM.

One `llmopt run` holds a data stage and five finetune stages with the same settings (3 epochs, batch 32,
max_length 64, seed 42, as bench/finetune.py): `fixed` (2e-5), `auto` (the sweep: 2e-5, 5e-5, 1e-4, 2e-4 by
successive halving of short trials, chosen on dev, then one full training) and one full fine-tune per other grid
value. The grid's best is the one with the best dev macro-F1 (what the trainer selects on), so it is the
exhaustive version of what `auto` estimates cheaply. Every model is then scored on test (accuracy with a 95%
bootstrap interval; auto − fixed and auto − grid best with paired bootstrap intervals). auto.wall_ratio = the auto
stage's seconds / the fixed stage's seconds (each stage's own clock, same process, same threads).

  .venv/bin/python bench/lr.py           # the full benchmark (about 6 MiniLM fine-tunes; printed before it starts)
  .venv/bin/python bench/lr.py --quick   # a tiny random BERT on 400/200/200 SST-2 rows: a plumbing check
                                         #   (writes bench/results/lr.quick.json)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
RESULTS = ROOT / "bench" / "results"
NAME = "bench-sst2-lr"
GRID = (2e-5, 5e-5, 1e-4, 2e-4)  # = llmopt.training.sweep.AUTO_LEARNING_RATES (checked below)
FULL = {"epochs": 3, "batch_size": 32, "max_length": 64}
QUICK = {"epochs": 2, "batch_size": 16, "max_length": 32}


def stage_id(lr: float) -> str:
    return "fixed" if lr == 2e-5 else f"lr_{lr:g}".replace(".", "_")


def recipe(data_dir: Path, model: str, threads: int, train: dict) -> str:
    block = ", ".join(f"{k}: {v}" for k, v in train.items())
    stages = [f"  - {{id: auto, type: finetune, model: {model}, train: {{learning_rate: auto, {block}}}}}"]
    stages += [f"  - {{id: {stage_id(lr)}, type: finetune, model: {model}, train: {{learning_rate: {lr:.1e}, {block}}}}}"
               for lr in GRID]
    stages.insert(0, stages.pop(1))  # fixed first, then auto, then the rest of the grid
    return (f"version: 1\nname: {NAME}\nseed: 42\nthreads: {threads}\nstages:\n"
            f"  - {{id: data, type: data, source: {{train: {data_dir}/train.jsonl, dev: {data_dir}/dev.jsonl, "
            f"test: {data_dir}/test.jsonl}}}}\n" + "\n".join(stages) + "\n")


def subset(dest: Path, n: dict[str, int]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for split, k in n.items():
        lines = (SST2 / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        (dest / f"{split}.jsonl").write_text("".join(lines[:k]), encoding="utf-8")
    return dest


def estimate_s(quick: bool) -> float:
    """About six full fine-tunes: fixed, three more grid points, auto (≈ 2×), from bench/results/finetune.json."""
    if quick:
        return 90.0
    try:
        one = json.loads((RESULTS / "finetune.json").read_text())["llmopt"]["train_runtime_s"]
    except (OSError, KeyError, ValueError):
        one = 400.0
    return 6 * 1.15 * one  # 15%: data split, dev passes, saves


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny random BERT on a few SST-2 rows (plumbing check)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not SST2.is_dir():
        print(f"{SST2} is absent; nothing to benchmark.")
        return 0
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
    import numpy as np
    from finetune import thread_env  # bench/finetune.py: the same thread settings

    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval.metrics import bootstrap_ci, paired_bootstrap
    from llmopt.eval.predictors import HFClassifier, predict_all
    from llmopt.fsutil import update_json
    from llmopt.models import builtin_model_path
    from llmopt.training.sweep import AUTO_LEARNING_RATES

    assert tuple(AUTO_LEARNING_RATES) == GRID, "the grid must be auto's own candidates"
    est = estimate_s(args.quick)
    print(f"bench/lr: estimated runtime {est / 60:.0f} min ({'quick' if args.quick else 'full'}, "
          f"{args.threads} threads)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="llmopt-bench-lr-"))
    if args.quick:
        from llmopt.testing.bad_inputs import make_tiny_bert

        data_dir = subset(work / "data", {"train": 400, "dev": 200, "test": 200})
        model, train, out_file = str(make_tiny_bert(work / "tiny-bert", builtin_model_path("minilm"))), QUICK, \
            RESULTS / "lr.quick.json"
    else:
        data_dir, model, train, out_file = SST2, "{builtin: minilm}", FULL, RESULTS / "lr.json"
    (work / "recipe.yaml").write_text(recipe(data_dir, model, args.threads, train))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmopt.cli", "run", str(work / "recipe.yaml"), "--runs-dir",
                    str(work / "runs")], check=True, env=thread_env(args.threads), cwd=ROOT)
    wall = time.perf_counter() - t0
    run_dir = next((work / "runs" / NAME).iterdir())
    stages = {p.name.split("-", 1)[1]: p for p in (run_dir / "stages").iterdir()}
    data = load_data_artifact(stages["data"] / "artifacts")
    y, k = np.asarray(data.ids(data.test)), len(data.labels)

    def scored(sid: str) -> dict:
        m = json.loads((stages[sid] / "metrics.json").read_text())
        pred = predict_all(HFClassifier(stages[sid] / "artifacts" / "model"), data.texts("test")).argmax(1)
        ci = bootstrap_ci(y, pred, k, seed=0)
        return {"pred": pred, "learning_rate": m.get("learning_rate"), "dev_macro_f1": m["dev_macro_f1"],
                "dev_accuracy": m["dev_accuracy"], "test_accuracy": float((pred == y).mean()),
                "test_accuracy_ci": ci["accuracy"], "stage_seconds": m["stage_seconds"],
                "train_runtime_s": m.get("train_runtime_s"), "lr_search": m.get("lr_search")}

    runs = {sid: scored(sid) for sid in ["auto", *map(stage_id, GRID)]}
    for lr in GRID:
        runs[stage_id(lr)]["learning_rate"] = lr
    grid = {lr: runs[stage_id(lr)] for lr in GRID}
    best_lr = max(GRID, key=lambda lr: (grid[lr]["dev_macro_f1"], -GRID.index(lr)))
    auto, fixed, best = runs["auto"], runs["fixed"], grid[best_lr]
    search = auto.pop("lr_search")

    def public(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("pred", "lr_search")}

    result = {
        "dataset": f"sst2 (train {len(data.train):,} / dev {len(data.dev):,} / test {len(y):,})"
                   + (" — quick subset, tiny random BERT" if args.quick else ""),
        "settings": {"model": "tiny random BERT" if args.quick else "all-MiniLM-L6-v2", **train, "seed": 42,
                     "threads": args.threads, "grid": list(GRID), "sweep_budget": search["budget"],
                     "strategy": search["strategy"]},
        "auto": {**public(auto), "wall_ratio": auto["stage_seconds"] / fixed["stage_seconds"],
                 "sweep_seconds": search["seconds"], "budget_s": search["budget_s"],
                 "stopped": search["stopped"],
                 "trials": [{"learning_rate": t["values"]["learning_rate"], "rung": t["rung"], "steps": t["steps"],
                             "dev_macro_f1": t["dev"]["macro_f1"], "dev_macro_f1_ci": t["dev"]["macro_f1_ci"],
                             "seconds": t["seconds"]} for t in search["trials"]]},
        "fixed_2e-5": public(fixed),
        "grid": {f"{lr:g}": public(grid[lr]) for lr in GRID},
        "grid_best": {**public(best), "learning_rate": best_lr},
        "auto_minus_fixed": paired_bootstrap(y, auto["pred"], fixed["pred"], k, seed=0)["accuracy"],
        "auto_minus_grid_best": paired_bootstrap(y, auto["pred"], best["pred"], k, seed=0)["accuracy"],
        "wall_s": wall,
    }
    update_json(out_file, result)

    def acc(r: dict) -> str:
        return (f"{100 * r['test_accuracy']:.1f}% [{100 * r['test_accuracy_ci'][0]:.1f}, "
                f"{100 * r['test_accuracy_ci'][1]:.1f}]")

    print(f"\n{result['dataset']}" + ("" if args.quick else f"; {result['settings']['model']}"))
    print(f"{'run':<14}{'lr':>8}  {'dev macro-F1':>12}  {'test accuracy [95% CI]':<26}{'stage s':>8}")
    for name, r in [("fixed 2e-5", fixed), ("auto", auto)] + [(f"grid {lr:g}", grid[lr]) for lr in GRID[1:]]:
        print(f"{name:<14}{r['learning_rate']:>8g}  {100 * r['dev_macro_f1']:>11.1f}%  {acc(r):<26}"
              f"{r['stage_seconds']:>8.0f}")
    for name, g in (("auto − fixed 2e-5", result["auto_minus_fixed"]),
                    (f"auto − grid best ({best_lr:g})", result["auto_minus_grid_best"])):
        print(f"{name}: {100 * g['diff']:+.1f} points, paired 95% interval [{100 * g['ci'][0]:+.1f}, "
              f"{100 * g['ci'][1]:+.1f}], p={g['p_value']:.3f}")
    print(f"auto: sweep {search['seconds']:.0f} s (budget {search['budget_s'] or 0:.0f} s), wall "
          f"{result['auto']['wall_ratio']:.2f}× one fine-tune; {len(search['trials'])} trials"
          + (f"; {search['stopped']}" if search["stopped"] else ""))
    print(f"whole benchmark {wall:.0f} s (estimated {est:.0f} s); wrote {out_file.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
