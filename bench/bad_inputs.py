"""Reliability benchmark: bad inputs of every category and a kill -9 matrix, with counts.

Prints a table and writes bench/results/reliability.json. Bigger than the test suite's matrix:
every fault point at several hit counts plus random-moment kills, and random bad files per format.
"""

from __future__ import annotations

import io
import json
import random
import sys
import tempfile
from collections import Counter, defaultdict
from contextlib import redirect_stderr
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "reliability.json"

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
    from llmopt.cli import main
    from llmopt.data.readers import read_examples
    from llmopt.errors import LlmoptError
    from llmopt.recipe import parse_recipe
    from llmopt.testing.bad_inputs import named_cases

    outcomes: dict[str, Counter] = defaultdict(Counter)
    for name, (cat, recipe, expected) in named_cases(root / "named", tiny).items():
        buf = io.StringIO()
        with redirect_stderr(buf):
            rc = main(["run", str(recipe), "--runs-dir", str(root / "runs")])
        err = buf.getvalue()
        clear = rc == 2 and expected in err and "Traceback" not in err
        outcomes[cat]["clear_error" if clear else "unclear"] += 1
    rng = random.Random(0)
    files = root / "random"
    files.mkdir()
    for i in range(400):  # random bytes, mutated good files, random recipes
        fmt = rng.choice(["jsonl", "csv", "tsv", "parquet"])
        p = files / f"{i}.{fmt}"
        base = b'{"text": "a b", "label": "x"}\n' * 3 if fmt == "jsonl" else b"text,label\na b,x\n"
        blob = bytearray(base if rng.random() < 0.5 else rng.randbytes(rng.randint(0, 200)))
        for _ in range(rng.randint(0, 5)):
            if blob:
                blob[rng.randrange(len(blob))] = rng.randrange(256)
        p.write_bytes(bytes(blob))
        try:
            read_examples(p, "auto", "text", "label")
            outcomes[f"random {fmt}"]["accepted_valid"] += 1
        except LlmoptError as e:
            outcomes[f"random {fmt}"]["clear_error" if str(p) in str(e) else "unclear"] += 1
        except Exception as e:  # anything else is a bug: a traceback for the user
            outcomes[f"random {fmt}"][f"crash {type(e).__name__}"] += 1
    for i in range(200):
        text = "".join(rng.choice("version: 1\nname: x\nstages:\n - {id: a, type: data}[]{}:-#'\"\t ") for _ in range(rng.randint(0, 120)))
        try:
            parse_recipe(text, source="r.yaml", check_paths=False)
            outcomes["random recipe"]["accepted_valid"] += 1
        except LlmoptError as e:
            outcomes["random recipe"]["clear_error" if str(e).startswith("r.yaml") else "unclear"] += 1
        except Exception as e:
            outcomes["random recipe"][f"crash {type(e).__name__}"] += 1
    tried = sum(sum(c.values()) for c in outcomes.values())
    rejected = sum(sum(v for k, v in c.items() if k != "accepted_valid") for c in outcomes.values())
    clear = sum(c["clear_error"] for c in outcomes.values())
    return {"tried": tried, "rejected": rejected, "clear_errors": clear, "accepted_valid": tried - rejected,
            "by_category": {k: dict(v) for k, v in outcomes.items()}}


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

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = make_tiny_bert(root / "tiny-bert", builtin_model_path("minilm"))
        bad = bad_inputs(root / "bad", tiny)
        print("kill -9 matrix:")
        crash = crashes(root / "crash", tiny)
    result = {"bad_inputs": bad, "crash": crash}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'category':32}{'outcomes'}")
    for cat, c in bad["by_category"].items():
        print(f"{cat:32}{', '.join(f'{k}: {v}' for k, v in sorted(c.items()))}")
    print(f"bad inputs tried {bad['tried']}, rejected {bad['rejected']}, clear errors {bad['clear_errors']}")
    print(f"crash points tried {crash['tried']}, killed {crash['kills']}, resumed OK {crash['resumed_ok']}, "
          f"lost {crash['lost']}")
    print(f"wrote {OUT}")
    return 0 if crash["lost"] == 0 and bad["clear_errors"] == bad["rejected"] else 1


if __name__ == "__main__":
    sys.exit(main())
