"""Data-parallel training on CPU: the finetune stage on SST-2 with 1 process vs 2 ranks (torchrun, gloo).

Both sides train the same model for the same number of optimizer steps with the same global batch and the same
CPU cores: 1 process with `threads` = 2 and batch 32, or 2 ranks with 1 thread each and batch 16 per rank. Texts
are batched in the seeded random order (group_by_length off, so both sides see the same batches) and the model
keeps its dropout, so the two loss curves differ by dropout noise only. samples/s is the Trainer's
train_samples_per_second (global batch x steps / training time, the final dev evaluation of 128 rows and the
checkpoint included); wall_s is the whole `llmopt run` (process start, data stage, training, saving).

  .venv/bin/python bench/ddp.py           # MiniLM, 120 steps -> bench/results/scale.json (key ddp), ddp_loss.png
  .venv/bin/python bench/ddp.py --quick   # a tiny random BERT, 12 steps -> bench/results/scale.quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
RESULTS = ROOT / "bench" / "results"
SEED, MAX_LEN, GLOBAL_BATCH, CORES = 42, 64, 32, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _subset(src: Path, dest: Path, n: int) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines()[:n]
    dest.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return dest


def _tiny_bert(out: Path) -> str:
    from llmopt.models import builtin_model_path
    from llmopt.testing.bad_inputs import make_tiny_bert

    return str(make_tiny_bert(out, builtin_model_path("minilm")))


def _recipe(folder: Path, model: str, steps: int, train_rows: int) -> Path:
    data = {split: _subset(SST2 / f"{split}.jsonl", folder / f"{split}.jsonl", n)
            for split, n in (("train", train_rows), ("dev", 128), ("test", 128))}
    path = folder / "ddp.yaml"
    path.write_text(f"""\
version: 1
name: bench-ddp
seed: {SEED}
stages:
  - id: data
    type: data
    source: {{train: {data['train']}, dev: {data['dev']}, test: {data['test']}}}
  - id: finetune
    type: finetune
    model: {model}
    train: {{learning_rate: 5.0e-5, max_steps: {steps}, batch_size: {GLOBAL_BATCH}, max_length: {MAX_LEN},
             logging_steps: 1, group_by_length: false, early_stopping_patience: null, warmup_ratio: 0.1}}
""", encoding="utf-8")
    return path


def _run(recipe: Path, runs: Path, ranks: int) -> dict:
    threads = CORES // ranks
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = ["-m", "llmopt.cli", "run", str(recipe), "--runs-dir", str(runs), f"threads={threads}",
            f"stages.finetune.train.batch_size={GLOBAL_BATCH // ranks}"]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                 "--master_port", str(_free_port())] if ranks > 1 else [sys.executable])
    t0 = time.perf_counter()
    proc = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{ranks} rank(s) failed:\n{proc.stderr[-3000:]}")
    run_dir = max((runs / "bench-ddp").iterdir())
    sdir = run_dir / "stages" / "01-finetune"
    metrics = json.loads((sdir / "metrics.json").read_text())
    log = [json.loads(line) for line in (sdir / "train_log.jsonl").read_text().splitlines()]
    return {"ranks": ranks, "threads_per_rank": threads, "batch_per_rank": GLOBAL_BATCH // ranks,
            "samples_per_s": metrics["train_samples_per_second"], "train_runtime_s": metrics["train_runtime_s"],
            "steps": metrics["global_steps"], "wall_s": round(wall, 1), "run_dir": str(run_dir),
            "losses": {r["step"]: r["loss"] for r in log if "loss" in r}}


def _plot(one: dict, two: dict, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for res, style in ((one, "-"), (two, "--")):
        steps = sorted(res["losses"])
        ax.plot(steps, [res["losses"][s] for s in steps], style,
                label=f"{res['ranks']} rank{'s' * (res['ranks'] > 1)} × batch {res['batch_per_rank']} "
                      f"({res['samples_per_s']:.1f} samples/s)")
    ax.set_xlabel("optimizer step (global batch 32)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny random BERT, 12 steps; writes scale.quick.json")
    p.add_argument("--steps", type=int, default=None)
    ns = p.parse_args()
    if not (SST2 / "train.jsonl").is_file():
        sys.exit(f"{SST2} is missing: this benchmark needs SST-2 (train/dev/test.jsonl)")
    steps = ns.steps or (12 if ns.quick else 120)
    with tempfile.TemporaryDirectory(prefix="llmopt-ddp-") as tmp:
        tmp = Path(tmp)
        model = _tiny_bert(tmp / "tiny-bert") if ns.quick else "{builtin: minilm}"
        recipe = _recipe(tmp, model, steps, train_rows=GLOBAL_BATCH * steps)
        one = _run(recipe, tmp / "runs1", 1)
        two = _run(recipe, tmp / "runs2", 2)
        png = (tmp if ns.quick else RESULTS) / "ddp_loss.png"
        name = "tiny BERT (quick)" if ns.quick else "MiniLM"
        _plot(one, two, png, f"{name} on SST-2: 1 process vs 2 CPU ranks (torchrun, gloo), {CORES} cores")
        common = sorted(set(one["losses"]) & set(two["losses"]))
        diff = max(abs(one["losses"][s] - two["losses"][s]) for s in common)
        result = {
            "model": "tiny random BERT (2 layers, 32 wide)" if ns.quick else "MiniLM (builtin)",
            "steps": steps, "global_batch": GLOBAL_BATCH, "max_length": MAX_LEN, "cpu_cores": os.cpu_count(),
            "samples_per_s_1": round(one["samples_per_s"], 2), "samples_per_s_2": round(two["samples_per_s"], 2),
            "speedup_2_vs_1": round(two["samples_per_s"] / one["samples_per_s"], 3),
            "train_runtime_s_1": one["train_runtime_s"], "train_runtime_s_2": two["train_runtime_s"],
            "wall_s_1": one["wall_s"], "wall_s_2": two["wall_s"],
            "loss_first_last_1": [one["losses"][common[0]], one["losses"][common[-1]]],
            "loss_first_last_2": [two["losses"][common[0]], two["losses"][common[-1]]],
            "loss_max_abs_diff": round(diff, 4),
            "loss_plot": str(png.relative_to(ROOT)) if not ns.quick else None,
            "setup": "1 process: threads 2, batch 32; 2 ranks: threads 1 each, batch 16 each; same seed and batches; "
                     "dropout on (the curves differ by dropout noise)",
        }
        from llmopt.fsutil import update_json

        out = RESULTS / ("scale.quick.json" if ns.quick else "scale.json")
        update_json(out, {"ddp": result})
        print(json.dumps(result, indent=2))
        print(f"-> {out} (key ddp); loss curves: {png}")
        if ns.quick:
            import shutil

            keep = Path(tempfile.gettempdir()) / "llmopt-ddp-loss.quick.png"
            shutil.copy(png, keep)
            print(f"quick plot kept at {keep}")


if __name__ == "__main__":
    main()
