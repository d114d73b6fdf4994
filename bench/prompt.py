"""Prompt benchmark: SmolLM2-135M-Instruct (bundled) on a fixed 300-row SST-2 dev sample and a 300-row sample of
the TREC test set (../shared/data, read in place): two instruction wordings zero-shot, and the first wording with 4-shot
random, label-balanced (3 seeded draws each) and nearest-neighbour (MiniLM over the whole train split: deterministic,
one pass) examples; accuracy and macro-F1 with
95% intervals, a paired test of each setting against zero-shot (prompting/run.py, the prompt stage's grid_table),
wall time and prompt tokens/s. The best SST-2 setting on dev is then scored once on a 300-row SST-2 test sample.
Beside them: the fine-tuned MiniLM and the LoRA-SFT SmolLM2 of bench/causal.py --part sft (its latest run
directory), scored here on the same 300 dev rows (their causal.json numbers are on other rows).

    python bench/prompt.py            # the full run (est. ~30 min on 2 free cores, empty cache; see Cost)
    python bench/prompt.py --quick    # 16 rows, one repeat, a 400-row pool, SST-2 only (--trec: and TREC)

Cost: SmolLM2 in fp32 prefills ~250 tokens/s on 2 cores (bench/causal.py); each prompt starts from the KV cache
of the prefix it shares with the previous prompt (system prompt, a fixed draw's examples, the instruction before
the text), so fixed-draw passes (random, balanced) cost about what zero-shot does; nearest-neighbour prompts differ
per row and cost ~4x. prompt_tokens_per_s = prompt length scored per second; computed_tokens_per_s = the tokens
actually run through the model per second. Per task: 2 zero-shot + 6 fixed-draw passes + 1 nearest pass
over 300 rows ≈ 2,700 calls, estimated ~15 min per task on 2 free cores; --quick took 585 s on a machine loaded 7
deep (2 cores). Every call is cached (prompt-calls.sqlite), so an interrupted run resumes where it stopped.
    --no-cache                        # every call to the model (default: the on-disk call cache)
    --rows N / --repeats R            # fewer rows or draws where the machine is slower (default 300, 3)

Writes bench/results/prompt.json (prompt.quick.json with --quick)."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
SST2_WORDINGS = {
    "plain": "Classify the sentiment of this movie review. Answer with one word: {{ labels }}.\n\nReview: {{ text }}",
    "question": "Review: {{ text }}\n\nIs the sentiment of this review positive or negative? Answer with one word: "
                "{{ labels }}.",
}
TREC_WORDS = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "person", "LOC": "location",
              "NUM": "number"}
TREC_WORDINGS = {
    "plain": "What kind of answer does this question ask for? Answer with one word: {{ labels }}.\n\n"
             "Question: {{ text }}",
    "question": "Question: {{ text }}\n\nIs the answer to this question an abbreviation, a description, an entity, a "
                "person, a location or a number? Answer with one word: {{ labels }}.",
}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """A fixed seeded sample, in file order."""
    return rows if n >= len(rows) else [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]


def run_task(task: str, backend, train: list[dict], rows: list[dict], wordings: dict[str, str], words: dict | None,
             repeats: int, labels: list[str], embed) -> tuple[list[dict], list, list]:
    from llmopt.prompting.fewshot import ExamplePool
    from llmopt.prompting.run import Setting
    from llmopt.prompting.templates import PromptTemplate
    from llmopt.stages.prompt import grid_table

    variants = [PromptTemplate(name=n, template=t, label_words=words or {lab: lab for lab in labels})
                for n, t in wordings.items()]
    # every wording zero-shot; the 4-shot strategies with the first wording (their cost: see the module docstring)
    grid = [Setting(v, 0, "random") for v in variants]
    grid += [Setting(variants[0], 4, s) for s in ("random", "balanced", "nearest")]
    index = {lab: i for i, lab in enumerate(labels)}
    y = [index[r["label"]] for r in rows]
    pool = ExamplePool(train, embed)
    t0 = time.perf_counter()

    def show(r: dict) -> None:
        print(f"{task:5s} {r['name']:28s} acc {r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] "
              f"sd {r['accuracy_sd']:.3f} x{r['repeats']}  {r['seconds']:.0f} s  {r['calls']} calls  "
              f"{r['prompt_tokens_per_s'] or 0:.0f} prompt tok/s", flush=True)

    table = grid_table(grid, grid[0], rows, y, repeats, backend=backend, labels=labels, method="loglik", seed=42,
                       pool=pool, pool_size=None, max_new_tokens=8, resamples=1000, on_row=show)
    wall = time.perf_counter() - t0
    preds = {r["name"]: r.pop("_preds") for r in table}
    for r in table:
        r["task"] = task
        print(f"{task:5s} {r['name']:28s} p vs zero-shot {r['p_vs_zero_shot']}")
    print(f"{task}: {wall:.0f} s", flush=True)
    return table, grid, [preds, pool, wall]


def finetuned_on(rows: list[dict], labels: list[str], threads: int) -> dict:
    """MiniLM and LoRA-SFT SmolLM2 from bench/causal.py --part sft's latest run, on these rows."""
    import numpy as np

    from llmopt.eval.causal import load_causal_runner
    from llmopt.eval.generation import classify
    from llmopt.eval.metrics import bootstrap_ci
    from llmopt.eval.predictors import HFClassifier, predict_all

    runs = sorted((ROOT / "runs" / "bench-causal-sft").glob("*/stages"))
    runs = [r for r in runs if (r / "02-sft" / "DONE").is_file() and (r / "01-minilm" / "DONE").is_file()]
    if not runs:
        why = "no finished run of bench/causal.py --part sft under runs/bench-causal-sft"
        return {"finetuned_minilm": {"accuracy": None, "why": why}, "sft_smollm2": {"accuracy": None, "why": why}}
    stages = runs[-1]
    y = np.asarray([labels.index(r["label"]) for r in rows])
    texts = [r["text"] for r in rows]
    out = {}
    mdir = stages / "01-minilm" / "artifacts" / "model"
    id2label = json.loads((mdir / "config.json").read_text())["id2label"]
    col = [labels.index(id2label[str(i)]) for i in range(len(id2label))]
    probs = predict_all(HFClassifier(mdir), texts)
    pred = np.asarray([col[i] for i in probs.argmax(axis=1)])
    out["finetuned_minilm"] = {"accuracy": float(np.mean(pred == y)),
                               "ci": bootstrap_ci(y, pred, len(labels))["accuracy"], "model": str(mdir)}
    sdir = stages / "02-sft" / "artifacts" / "model"
    runner = load_causal_runner(sdir, threads)
    instr = json.loads((sdir / "llmopt_instruction.json").read_text())
    t0 = time.perf_counter()
    res = classify(runner, texts, labels, instr, "loglik")
    pred = np.asarray(res["preds"])
    out["sft_smollm2"] = {"accuracy": float(np.mean(pred == y)), "ci": bootstrap_ci(y, pred, len(labels))["accuracy"],
                          "method": "loglik", "model": str(sdir), "seconds": round(time.perf_counter() - t0, 1)}
    out["finetuned_from_run"] = str(stages.parent)
    return out


def main(argv: list[str]) -> int:
    if not (SHARED / "sst2" / "dev.jsonl").is_file() or not (SHARED / "trec" / "test.jsonl").is_file():
        print(f"skipped: {SHARED} (sst2, trec) not found (the reference data lives in ../shared/data)")
        return 0
    quick = "--quick" in argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = int(os.environ.get("LLMOPT_THREADS", "2"))
    from llmopt.llm import smollm2_path
    from llmopt.prompting.backends import Cached, LocalHF
    from llmopt.prompting.cache import CallCache
    from llmopt.prompting.fewshot import minilm_embedder

    n, repeats, pool_n = (16, 1, 400) if quick else (300, 3, None)
    if "--rows" in argv:
        n = int(argv[argv.index("--rows") + 1])
    if "--repeats" in argv:
        repeats = int(argv[argv.index("--repeats") + 1])
    t_all = time.perf_counter()
    inner = LocalHF(smollm2_path(), threads)
    backend = inner if "--no-cache" in argv else Cached(inner, CallCache())
    embed = minilm_embedder()
    sst_train = sample(read(SHARED / "sst2" / "train.jsonl"), pool_n or 10**9)
    sst_dev = sample(read(SHARED / "sst2" / "dev.jsonl"), n)
    sst_labels = ["negative", "positive"]
    table, grid, (preds, pool, sst_wall) = run_task("sst2", backend, sst_train, sst_dev, SST2_WORDINGS, None, repeats,
                                                    sst_labels, embed)
    trec_table, trec_wall = [], None
    if not quick or "--trec" in argv:
        trec_train = sample(read(SHARED / "trec" / "train.jsonl"), pool_n or 10**9)
        trec_test = sample(read(SHARED / "trec" / "test.jsonl"), n)
        trec_labels = sorted(TREC_WORDS)
        trec_table, _, (_, _, trec_wall) = run_task("trec", backend, trec_train, trec_test, TREC_WORDINGS,
                                                    TREC_WORDS, repeats, trec_labels, embed)
    # the best SST-2 setting on dev, scored once on a test sample (the saved prompt exactly: repeat 0's examples)
    from llmopt.data.artifact import LabelledData
    from llmopt.stages.prompt import PromptConfig, _artifact, _score_split

    best_row = max(table, key=lambda r: (r["accuracy"], -r["k"]))
    best = next(s for s in grid if s.name == best_row["name"])
    cfg = PromptConfig(id="bench", variants=[{"name": "x", "template": "{{ text }}"}], pool_size=None)
    art = _artifact(best, best_row, sst_labels, pool, cfg, 42)
    sst_test = sample(read(SHARED / "sst2" / "test.jsonl"), n)
    data = LabelledData(sst_labels, sst_train, sst_dev, sst_test)
    test = _score_split(data, "test", best, art, zero=grid[0], backend=backend, labels=sst_labels, method="loglik",
                        seed=42, pool=pool, pool_size=None, max_new_tokens=8, resamples=1000)
    ft = finetuned_on(sst_dev, sst_labels, threads)
    calls = getattr(backend, "inner", backend).calls
    fresh_tok = sum(r["prompt_tokens"] for r in table + trec_table)
    fresh_s = sum(r["seconds"] for r in table + trec_table if r["calls"])
    keep = ("task", "name", "variant", "k", "strategy", "accuracy", "ci", "macro_f1", "macro_f1_ci", "repeats",
            "accuracy_per_repeat", "accuracy_sd", "p_vs_zero_shot", "unparseable", "calls", "cached", "seconds",
            "prompt_tokens_per_s")
    result = {
        "benchmark": "prompt", "quick": quick, "model": "SmolLM2-135M-Instruct (bundled), fp32, transformers",
        "method": "loglik: the most likely answer word (+ end of turn) after the chat prompt, labels in one batch",
        "rows": {"sst2": f"{len(sst_dev)}-row fixed sample (seed 0) of ../shared/data/sst2/dev.jsonl",
                 "trec": f"{n}-row fixed sample (seed 0) of ../shared/data/trec/test.jsonl" if trec_table else None},
        "repeats": repeats, "few_shot_pool": ("the whole train split" if pool_n is None else f"a {pool_n}-row sample of train") +
        "; random/balanced: one fixed draw of 4 per repeat; nearest: the 4 most similar train rows per query by "
        "MiniLM cosine (deterministic over the whole pool: one pass, repeats = 1)",
        "variants": [{k: r.get(k) for k in keep} for r in table + trec_table],
        "best_sst2": {"name": best_row["name"], "dev_accuracy": best_row["accuracy"], "dev_ci": best_row["ci"],
                      "test": {k: test[k] for k in ("accuracy", "ci", "macro_f1", "n")},
                      "test_zero_shot": {k: test["zero_shot"][k] for k in ("accuracy", "ci")} if "zero_shot" in test
                      else None, "test_rows": f"{len(sst_test)}-row fixed sample (seed 0) of sst2/test.jsonl"},
        **ft,
        "wall_s": round(time.perf_counter() - t_all, 1), "sst2_wall_s": round(sst_wall, 1),
        "trec_wall_s": round(trec_wall, 1) if trec_wall else None,
        "model_calls": calls, "prompt_tokens_scored": fresh_tok,
        "prompt_tokens_per_s": round(fresh_tok / fresh_s, 1) if fresh_s else None,  # prompt length per second
        "computed_prompt_tokens": inner.computed_tokens, "reused_prompt_tokens": inner.reused_tokens,
        "computed_tokens_per_s": round(inner.computed_tokens / fresh_s, 1) if fresh_s else None,
        "threads": threads, "load_average_at_end": os.getloadavg()[0],
    }
    out = RESULTS / ("prompt.quick.json" if quick else "prompt.json")
    from llmopt.fsutil import atomic_write_json

    atomic_write_json(out, result)
    print(json.dumps({k: result[k] for k in ("best_sst2", "wall_s", "model_calls", "prompt_tokens_per_s",
                                             "computed_prompt_tokens", "reused_prompt_tokens",
                                             "computed_tokens_per_s")}, indent=1))
    print(f"finetuned_minilm {ft['finetuned_minilm']['accuracy']}  sft_smollm2 {ft['sft_smollm2']['accuracy']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
