"""The default recipe as a new user runs it (`make demo` = `llmopt run recipes/default.yaml`), timed, on the builtin
data and, data swapped, on a multi-class set it was not written for (TREC-6 from ../shared/data, a 6-way question
type task: the same caps, so 2,000 labelled train rows, the rest of train as unlabelled transfer text).

Each run is one fresh `llmopt run` subprocess (a new run directory); wall_s is its wall time, peak_rss_gb the
peak resident memory of that process (its own rusage from wait4; it runs every stage in-process). From the
evaluate stage's metrics it reads every model's test accuracy [95% CI], batch-1 p50 latency and size, and from the
report's rule (llmopt.report.answer.recommend) the recommended model, its share of the teacher's accuracy and the
paired-bootstrap p of the difference. Floors (issue 21): the recommended model keeps >= 98% of the teacher with no
significant drop (p >= 0.05), wall time <= 600 s and peak memory <= 4 GB on 2 cores.

  .venv/bin/python bench/default_recipe.py                 # builtin data, then TREC -> bench/results/default.json
  .venv/bin/python bench/default_recipe.py --data builtin  # one of them
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
TREC = ROOT.parent / "shared" / "data" / "trec"
RESULTS = ROOT / "bench" / "results"
SWAPS = {"builtin": [], "trec": [f"stages.data.source={{train: {TREC}/train.jsonl, test: {TREC}/test.jsonl}}"]}


def run_recipe(name: str, runs_dir: Path) -> dict:
    """One timed `llmopt run recipes/default.yaml` (data swapped for `name`) and what its run directory says."""
    cmd = [str(ROOT / ".venv" / "bin" / "llmopt"), "run", "recipes/default.yaml", "--runs-dir", str(runs_dir),
           *SWAPS[name]]
    log = runs_dir / f"{name}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=f, stderr=f)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak RSS (Linux: kB)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{name}: llmopt run failed ({os.waitstatus_to_exitcode(status)}):\n{log.read_text()[-3000:]}")
    run_dir = max((runs_dir / "default").iterdir(), key=lambda p: p.stat().st_mtime)
    return {"run_dir": str(run_dir.relative_to(runs_dir)), "wall_s": round(wall, 1),
            "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), **summarize(run_dir)}


def summarize(run_dir: Path) -> dict:
    """The evaluate stage's table and the report's recommendation for one finished run directory."""
    from llmopt.fsutil import read_json
    from llmopt.report.answer import recommend

    stages = {p.name.split("-", 1)[1]: p for p in (run_dir / "stages").iterdir()}
    ev = read_json(stages["evaluate"] / "metrics.json")
    rec = recommend(ev)
    ref = ev["models"][ev["reference"]]
    best = ev["models"][rec["name"]]
    vs = (best.get("vs_reference") or {}).get("accuracy") or {}  # paired bootstrap, recommended − teacher
    rows = {n: {"kind": m.get("kind"), "accuracy": m["accuracy"], "accuracy_ci": m["accuracy_ci"],
                "latency_b1_p50_ms": m.get("latency_b1_p50_ms"), "size_bytes": m.get("size_bytes")}
            for n, m in ev["models"].items()}
    seconds = {k: read_json(p / "metrics.json").get("stage_seconds") for k, p in stages.items()
               if (p / "metrics.json").is_file()}
    ft = read_json(stages["finetune"] / "metrics.json")
    return {
        "stage_seconds": seconds, "test_n": ev["n"], "labels": ev["labels"],
        "teacher_learning_rate": ft.get("learning_rate"),
        "transfer_rows": read_json(stages["distill"] / "metrics.json").get("transfer_rows"),
        "recommended": rec["name"], "recommended_kind": rec["kind"], "reason": rec["reason"],
        "teacher_accuracy": ref["accuracy"], "recommended_accuracy": best["accuracy"],
        "retention": best["accuracy"] / ref["accuracy"], "p_vs_teacher": vs.get("p_value"),
        "diff": vs.get("diff"), "diff_ci": vs.get("ci"), "models": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["all", *SWAPS], default="all")
    args = ap.parse_args(argv)
    from llmopt.fsutil import update_json

    names = list(SWAPS) if args.data == "all" else [args.data]
    if "trec" in names and not TREC.is_dir():
        print(f"{TREC} is absent: TREC skipped")
        names.remove("trec")
    out = {}
    with tempfile.TemporaryDirectory(prefix="llmopt-default-") as tmp:
        for name in names:
            print(f"== {name}: llmopt run recipes/default.yaml {' '.join(SWAPS[name])}", flush=True)
            r = out[name] = run_recipe(name, Path(tmp))
            print(f"{'model':<22}{'kind':<10}{'test acc % [95% CI]':<24}{'p50 ms':>8}{'MB':>8}")
            for n, m in r["models"].items():
                lo, hi = m["accuracy_ci"]
                size = f"{m['size_bytes'] / 1e6:.1f}" if m.get("size_bytes") else "—"
                p50 = f"{m['latency_b1_p50_ms']:.2f}" if m.get("latency_b1_p50_ms") is not None else "—"
                print(f"{n:<22}{m['kind']:<10}{100 * m['accuracy']:5.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
                      f"{'':<6}{p50:>8}{size:>8}")
            print(f"recommended: {r['recommended']} — {100 * r['retention']:.1f}% of the teacher "
                  f"(p = {r['p_vs_teacher']}), wall {r['wall_s']:.0f} s, peak RSS {r['peak_rss_gb']} GB, "
                  f"teacher lr {r['teacher_learning_rate']}, transfer rows {r['transfer_rows']:,}", flush=True)
    update_json(RESULTS / "default.json", out)
    print(f"wrote {RESULTS / 'default.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
