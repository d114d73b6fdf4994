"""Reliability benchmark: structured bad inputs of every category and a kill -9 matrix, with counts.

Prints a table and writes bench/results/reliability.json (`--only bad_inputs` or `--only crash` rewrites
one key and keeps the other). Bigger than the test suite's matrix: >= 100 bad inputs per data format and
for recipes (valid files and shipped recipes with one thing wrong), every fault point at several hit
counts plus random-moment kills.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "reliability.json"
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
PER_FORMAT, RECIPE_CASES, PROCESS_SAMPLE = 120, 140, 10

CRASH_RECIPE = """\
version: 1
name: crash
seed: 5
threads: 1
stages:
  - {{id: data, type: data, source: {{path: {data}}}}}
  - {{id: finetune, type: finetune, model: {model}, epochs: 3, batch_size: 16, learning_rate: 1.0e-3,
     max_length: 32, early_stopping_patience: null}}
  - {{id: quantize, type: quantize, model: finetune, max_length: 32, check_rows: 10}}
  - {{id: evaluate, type: evaluate, models: [finetune, quantize], latency_runs: 10, warmup: 1, throughput_batches: 1,
     max_length: 32}}
  - {{id: report, type: report}}
"""
FAULTS = ["data.read:1", "stage.start:1", "stage.start:2", "stage.start:3", "stage.start:4",
          "atomic.before_rename:2", "atomic.before_rename:4", "atomic.before_rename:8", "atomic.before_rename:12",
          "ckpt.saved:1", "ckpt.saved:2", "ckpt.saved:3", "stage.end:1", "stage.end:2", "stage.end:3",
          "stage.start:5", "quantize.write:1", "stage.end:4", "report.write:1"]
RANDOM_KILLS = 8


def bad_inputs(root: Path, tiny: Path) -> dict:
    """Every structured bad input through the CLI in this process, plus a sample through real processes."""
    from llmopt.testing.bad_data import data_cases
    from llmopt.testing.bad_inputs import model_cases, run_case
    from llmopt.testing.bad_recipes import recipe_cases

    cases = (data_cases(root / "data", PER_FORMAT) + recipe_cases(RECIPES, root, RECIPE_CASES)
             + model_cases(root / "model", tiny))
    results = [(c, *run_case(c, root / "runs" / str(i))) for i, c in enumerate(cases)]
    # `llmopt run` in a fresh process, recipes included: exit 2, one line, no run directory
    sample = random.Random(2).sample([c for c, outcome, _ in results if outcome == "clear_error"], PROCESS_SAMPLE)
    results += [(replace(c, category="process sample", command="run"),
                 *run_case(replace(c, command="run"), root / "process" / str(i), subprocess_run=True))
                for i, c in enumerate(sample)]
    by_category: dict[str, dict] = {}
    for case, outcome, why in results:
        cat = by_category.setdefault(case.category, {"tried": 0, "clear_error": 0, "accepted_valid": 0, "bad": 0,
                                                     "kinds": {}, "bad_examples": []})
        cat["tried"] += 1
        cat[outcome] += 1
        cat["kinds"][case.kind] = cat["kinds"].get(case.kind, 0) + 1
        if outcome == "bad" and len(cat["bad_examples"]) < 5:
            cat["bad_examples"].append({"kind": case.kind, "why": why.replace(str(root), "<tmp>")})
    totals = {k: sum(c[k] for c in by_category.values()) for k in ("tried", "clear_error", "accepted_valid", "bad")}
    return {**totals, "by_category": by_category}


def crashes(root: Path, tiny: Path) -> dict:
    from llmopt.testing.bad_inputs import good_rows
    from llmopt.testing.crash import crash_and_resume, timed_reference

    root.mkdir(parents=True, exist_ok=True)
    data = root / "crash.jsonl"
    data.write_text(good_rows(60))
    recipe = root / "crash.yaml"
    recipe.write_text(CRASH_RECIPE.format(data=data, model=tiny))
    reference, wall = timed_reference(recipe, root / "ref")
    rng = random.Random(1)
    results = []
    for i, point in enumerate(FAULTS + [None] * RANDOM_KILLS):
        kill_after = None if point else rng.uniform(0.1 * wall, 0.95 * wall)
        r = crash_and_resume(recipe, root / f"crash-{i}", reference, fault=point, kill_after=kill_after)
        results.append(r)
        print(f"  {r.point:28} killed={r.killed!s:5} resumed_ok={r.resumed_ok!s:5} lost={r.lost} {r.mismatch[:1]}")
    return {
        "kills": sum(r.killed for r in results),
        "tried": len(results),
        "resumed_ok": sum(r.resumed_ok for r in results if r.killed),
        "lost": sum(r.lost for r in results),
        "reference_wall_s": wall,
        "cases": [{"point": r.point, "killed": r.killed, "resumed_ok": r.resumed_ok, "lost": r.lost,
                   "partial": r.partial, "mismatch": r.mismatch} for r in results],
    }


def main() -> int:
    from llmopt.models import builtin_model_path
    from llmopt.testing.bad_inputs import make_tiny_bert

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["bad_inputs", "crash"], help="run one part; the other key is kept")
    parts = [p for p in ("bad_inputs", "crash") if parser.parse_args().only in (None, p)]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = make_tiny_bert(root / "tiny-bert", builtin_model_path("minilm"))
        if "bad_inputs" in parts:
            bad = bad_inputs(root / "bad", tiny)
            save("bad_inputs", bad)
            print(f"{'category':20}{'tried':>7}{'clear_error':>13}{'accepted_valid':>16}{'bad':>6}")
            for cat, c in {**bad["by_category"], "total": bad}.items():
                print(f"{cat:20}{c['tried']:7}{c['clear_error']:13}{c['accepted_valid']:16}{c['bad']:6}")
            for cat, c in bad["by_category"].items():
                for ex in c["bad_examples"]:
                    print(f"  bad {cat} {ex['kind']}: {ex['why'][:300]}")
            ok &= bad["bad"] == 0
        if "crash" in parts:
            print("kill -9 matrix:")
            crash = crashes(root / "crash", tiny)
            save("crash", crash)
            print(f"crash points tried {crash['tried']}, killed {crash['kills']}, resumed OK {crash['resumed_ok']}, "
                  f"lost {crash['lost']}")
            ok &= crash["lost"] == 0
    return 0 if ok else 1


def save(key: str, value: dict) -> None:
    """Read-modify-write one key of the results file, right away: the other key is kept as it is now."""
    result = json.loads(OUT.read_text()) if OUT.is_file() else {}
    result[key] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {key} to {OUT}")


if __name__ == "__main__":
    sys.exit(main())
