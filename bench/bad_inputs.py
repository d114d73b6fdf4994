"""Reliability benchmark: structured bad inputs of every category, with counts.

Prints a table and writes the `bad_inputs` key of bench/results/reliability.json (read-modify-write:
bench/crash.py writes the `crash` key, the kill -9 matrix). Bigger than the test suite's matrix: >= 100
bad inputs per data format and for recipes (valid files and shipped recipes with one thing wrong).
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


def main() -> int:
    from llmopt.models import builtin_model_path
    from llmopt.testing.bad_inputs import make_tiny_bert

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = make_tiny_bert(root / "tiny-bert", builtin_model_path("minilm"))
        bad = bad_inputs(root / "bad", tiny)
    save("bad_inputs", bad)
    print(f"{'category':20}{'tried':>7}{'clear_error':>13}{'accepted_valid':>16}{'bad':>6}")
    for cat, c in {**bad["by_category"], "total": bad}.items():
        print(f"{cat:20}{c['tried']:7}{c['clear_error']:13}{c['accepted_valid']:16}{c['bad']:6}")
    for cat, c in bad["by_category"].items():
        for ex in c["bad_examples"]:
            print(f"  bad {cat} {ex['kind']}: {ex['why'][:300]}")
    return 0 if bad["bad"] == 0 else 1


def save(key: str, value: dict) -> None:
    """Read-modify-write one key of the results file, right away: the other keys are kept as they are now."""
    result = json.loads(OUT.read_text()) if OUT.is_file() else {}
    result[key] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {key} to {OUT}")


if __name__ == "__main__":
    sys.exit(main())
