"""Kill -9 matrix: every fault point at a few of its hit counts plus random-moment kills, each resumed.

On the tiny recipe of the tests (llmopt.testing.crash.TINY_RECIPE: data, a 9-step fine-tune with a
checkpoint each epoch, quantize, evaluate, report). A first in-process run counts how often each fault
point is passed; each point is then killed at up to five counts spread over that range (all of them when
there are five or fewer), and RANDOM_KILLS timers kill at random moments of the run. After each kill the
run is resumed and judged by llmopt.testing.crash.crash_and_resume: files lost or half-written, quality
equal to an uninterrupted run, stages reused (skipped per events.jsonl, training restarted at the newest
complete checkpoint), and redone_s, the seconds of stage work done again (definition in that module).

Prints a table and writes the `crash` key of bench/results/reliability.json (read, modified, written
back: bench/bad_inputs.py writes the `bad_inputs` key of the same file).

    .venv/bin/python bench/crash.py [--random-kills 10] [--only ckpt.saved,train.step] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "reliability.json"
RANDOM_KILLS = 10


def census(recipe: Path, runs_root: Path) -> Counter:
    """How many times one uninterrupted run passes each fault point (run in this process, points counted)."""
    import llmopt.faults as faults
    from llmopt.pipeline import run_recipe

    hits: Counter = Counter()
    original = faults.point
    faults.point = lambda name: hits.update([name])
    try:
        os.environ.pop("LLMOPT_FAULT", None)
        run_recipe(recipe, runs_root=runs_root)
    finally:
        faults.point = original
    return hits


def counts_to_kill(n: int) -> list[int]:
    """All hit counts when there are few; else 1, the last and three between."""
    if n <= 5:
        return list(range(1, n + 1))
    return sorted({1, n} | {round(1 + (n - 1) * q) for q in (0.25, 0.5, 0.75)})


def run_matrix(root: Path, tiny: Path, random_kills: int, only: set[str] | None) -> dict:
    from llmopt.testing.crash import crash_and_resume, reference_run, summarize, write_tiny_recipe

    recipe = write_tiny_recipe(root, tiny)
    hits = census(recipe, root / "census")
    print("fault points passed by one run:", dict(sorted(hits.items())), flush=True)
    reference = reference_run(recipe, root / "reference")
    print(f"reference run: {reference.wall_s:.1f}s; stages "
          + ", ".join(f"{k} {v:.1f}s" for k, v in reference.stage_seconds.items()), flush=True)
    plan: list[tuple[str | None, float | None]] = [
        (f"{p}:{k}", None) for p in sorted(hits) if not only or p in only for k in counts_to_kill(hits[p])]
    rng = random.Random(1)
    plan += [(None, rng.uniform(0.1, 0.9) * reference.wall_s) for _ in range(random_kills)]

    print(f"\n{'kill':26}{'landed':22}{'ckpt':>5}  {'skipped on resume':40}{'resumed@':>9}{'now':>5}"
          f"{'redone_s':>10}{'lost':>6}  reused", flush=True)
    results = []
    for i, (fault, kill_after) in enumerate(plan):
        r = crash_and_resume(recipe, root / f"kill-{i:02d}", reference, fault=fault, kill_after=kill_after)
        results.append(r)
        ckpt = "-" if r.checkpoint_at_kill is None else str(r.checkpoint_at_kill)
        at = "-" if r.resumed_at_step is None else str(r.resumed_at_step)
        now = "-" if r.steps_trained_now is None else str(r.steps_trained_now)
        redone = "-" if r.redone_s is None else f"{r.redone_s:.1f}"
        reused = "yes" if r.reused_ok else ("not killed" if not r.killed else "NO " + "; ".join(r.reuse_problems))
        if r.mismatch:
            reused += "  MISMATCH " + "; ".join(r.mismatch[:2])
        print(f"{r.point:26}{r.landed[:21]:22}{ckpt:>5}  {','.join(r.skipped)[:39]:40}{at:>9}{now:>5}"
              f"{redone:>10}{r.files_lost_or_partial:>6}  {reused}", flush=True)

    out = summarize(results)
    out.update({
        "redone_s_definition": "per kill, over the stages the killed process had started and the resume did not "
                               "skip: (seconds in the killed process up to the kill + seconds in the resume) - "
                               "seconds in the uninterrupted run; skipped stages count 0 (see llmopt.testing.crash)",
        "redone_wall_s_median": _median([r.redone_wall_s for r in results if r.killed]),
        "reference_wall_s": round(reference.wall_s, 3),
        "reference_stage_seconds": reference.stage_seconds,
        "fault_point_hits": dict(sorted(hits.items())),
        "load_average": list(os.getloadavg()),
        "cases": [{
            "point": r.point, "killed": r.killed, "landed": r.landed, "checkpoint_at_kill": r.checkpoint_at_kill,
            "done_at_kill": r.done_at_kill, "skipped": r.skipped, "resume_actions": r.resume_actions,
            "resumed_at_step": r.resumed_at_step, "steps_trained_now": r.steps_trained_now,
            "global_steps": r.global_steps, "redone_s": r.redone_s, "redone_by_stage": r.redone_by_stage,
            "redone_wall_s": r.redone_wall_s,
            "files_lost_or_partial": r.files_lost_or_partial, "resumed_ok": r.resumed_ok, "reused_ok": r.reused_ok,
            "problems": r.partial + r.partial_after + [f"missing {m}" for m in r.missing] + r.reuse_problems
            + r.mismatch,
        } for r in results],
    })
    return out


def _median(xs: list) -> float | None:
    import statistics

    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def write_key(path: Path, key: str, value: dict) -> None:
    """Replace one key of the results file, keeping the others (read just before writing)."""
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--random-kills", type=int, default=RANDOM_KILLS)
    ap.add_argument("--only", help="comma-separated fault points (default: all that one run passes)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from llmopt.models import builtin_model_path
    from llmopt.testing.bad_inputs import make_tiny_bert

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = make_tiny_bert(root / "tiny-bert", builtin_model_path("minilm"))
        only = set(args.only.split(",")) if args.only else None
        crash = run_matrix(root / "crash", tiny, args.random_kills, only)
    crash["bench_seconds"] = round(time.perf_counter() - t0, 1)
    write_key(args.out, "crash", crash)
    print(f"\nkills {crash['kills']} of {crash['tried']} tried; resumed with the same results {crash['resumed_ok']}; "
          f"reused what they should {crash['reused_ok']}; files lost or half-written {crash['files_lost_or_partial']}; "
          f"redone_s median {crash['redone_s_median']} max {crash['redone_s_max']}")
    print(f"wrote the crash key of {args.out}")
    ok = crash["files_lost_or_partial"] == 0 and crash["reused_ok"] == crash["resumed_ok"] == crash["kills"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
