"""The value of review, measured: flip 10% of SST-2 train labels, rank, let a simulated reviewer fix the top N%.

Per seed (3): flip 10% of the train labels at random (seeded; binary SST-2, so a flip is the other label). Rank the
noisy train rows with `llmopt review`'s label-error ranking (cleanlab self-confidence on out-of-fold
probabilities). A simulated reviewer takes the top N = 2% / 5% / 10% of the ranking and, through the page's decision
API (POST /api/decisions with the token, the same FastAPI app), relabels each row to its gold label or accepts it;
`llmopt review --export`'s exporter writes the reviewed train split, which the data stage's file loader reads back,
and a model is retrained on it. Reported with 95% t-intervals over the 3 seeds:
- ranking.precision_at / ranking.recall_at: share of the top N that were flipped / of the flipped rows found;
- random.recall_at: the same recall for a random review order (seeded permutation);
- accuracy.clean / accuracy.noisy / accuracy.reviewed[N]: test accuracy (SST-2 test, 1,821 rows) of the model
  trained on clean, noisy and reviewed data.

Full (default): ranking from bundled MiniLM sentence embeddings + logistic regression (5 folds), and the retrained
model is MiniLM fine-tuned by llmopt's data → finetune pipeline (1 epoch, max_length 64, dev subsampled to 400
rows): 15 fine-tunes, estimated 25-35 minutes on 2 idle cores (not yet measured: only a 4-step smoke ran).
--quick: ranking from TF-IDF + logistic regression (the review command's default) and the retrained model is
TF-IDF + logistic regression too (~2.5 minutes on 2 busy cores); writes bench/results/review.quick.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
NOISE = 0.10
SHARES = (0.02, 0.05, 0.10)
SEEDS = (1, 2, 3)


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(p: Path, rows: list[dict]) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def interval(values: list[float]) -> dict:
    """Mean and 95% t-interval over seeds."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "ci": [float(v.mean() - half), float(v.mean() + half)],
            "values": [float(x) for x in v]}


def make_run(folder: Path, train: list[dict], dev: list[dict], test: list[dict], labels: list[str]) -> Path:
    """A run directory holding one finished data stage (what `llmopt run` leaves) for the review tools to read."""
    run = folder / "run"
    if run.exists():
        shutil.rmtree(run)
    art = run / "stages" / "00-data" / "artifacts"
    for split, rows in (("train", train), ("dev", dev), ("test", test)):
        write_jsonl(art / f"{split}.jsonl", rows)
    (art / "labels.json").write_text(json.dumps({"labels": labels}))
    sdir = art.parent
    (sdir / "config.json").write_text(json.dumps({"id": "data", "type": "data"}))
    (sdir / "metrics.json").write_text("{}")
    (sdir / "DONE").write_text("")
    (run / "recipe.resolved.yaml").write_text("name: bench-review\n")
    return run


def train_tfidf(train: list[dict], test: list[dict]) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = vec.fit_transform([r["text"] for r in train])
    clf = LogisticRegression(C=4.0, solver="liblinear").fit(x, [r["label"] for r in train])  # binary SST-2
    pred = clf.predict(vec.transform([r["text"] for r in test]))
    return float(np.mean([p == r["label"] for p, r in zip(pred, test)]))


def train_minilm(train_file: Path, test: list[dict], seed: int, folder: Path) -> float:
    """llmopt's own data → finetune pipeline on `train_file` (read by the data stage), scored on SST-2 test."""
    from llmopt.eval.predictors import HFClassifier, predict_all
    from llmopt.pipeline import run_recipe

    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.yaml"
    recipe.write_text(f"""\
version: 1
name: {folder.name}
seed: {seed}
stages:
  - id: data
    type: data
    source: {{train: {train_file}, dev: {SST2 / 'dev.jsonl'}, test: {SST2 / 'test.jsonl'}}}
    length_tokenizer: null
    max_dev_rows: 400
  - id: finetune
    type: finetune
    data: data
    model: {{builtin: minilm}}
    train: {{learning_rate: 1.0e-4, epochs: 1, batch_size: 32, max_length: 64}}
""", encoding="utf-8")
    run_dir = run_recipe(recipe, runs_root=folder / "runs", resume="latest", argv=sys.argv)
    model = next((run_dir / "stages").glob("*-finetune")) / "artifacts" / "model"
    labels = json.loads(next((run_dir / "stages").glob("*-data")).joinpath("artifacts/labels.json").read_text())
    probs = predict_all(HFClassifier(model), [r["text"] for r in test])
    pred = [labels["labels"][i] for i in probs.argmax(1)]
    return float(np.mean([p == r["label"] for p, r in zip(pred, test)]))


def one_seed(seed: int, quick: bool, work: Path, log) -> dict:
    from fastapi.testclient import TestClient

    from llmopt.review.export import export
    from llmopt.review.server import ReviewSession, create_app
    from llmopt.review.sources import LabelErrorSource
    from llmopt.stages.data import DataConfig, load_splits

    gold = read_jsonl(SST2 / "train.jsonl")
    dev, test = read_jsonl(SST2 / "dev.jsonl"), read_jsonl(SST2 / "test.jsonl")
    labels = sorted({r["label"] for r in gold})
    rng = np.random.default_rng(seed)
    n = len(gold)
    flipped = set(int(i) for i in rng.choice(n, size=round(NOISE * n), replace=False))
    noisy = [dict(r) for r in gold]
    for i in flipped:
        others = [lab for lab in labels if lab != noisy[i]["label"]]
        noisy[i]["label"] = others[int(rng.integers(len(others)))]
    folder = work / f"seed{seed}"
    run = make_run(folder, noisy, dev, test, labels)

    def fit(name: str, train_file: Path) -> float:
        cfg = DataConfig(id="data", source={"train": str(train_file), "dev": str(SST2 / "dev.jsonl"),
                                            "test": str(SST2 / "test.jsonl")}, length_tokenizer=None)
        splits, _ = load_splits(cfg, seed)  # the data stage reads the export as a source
        rows = [{"text": e.text, "label": e.label} for e in splits["train"]]
        t = time.perf_counter()
        acc = train_tfidf(rows, test) if quick else train_minilm(train_file, test, seed, folder / name)
        log(f"  seed {seed} {name}: {len(rows)} train rows, test accuracy {100 * acc:.2f} "
            f"({time.perf_counter() - t:.0f} s)")
        return acc

    out: dict = {"seed": seed, "flipped": len(flipped), "accuracy": {}, "precision_at": {}, "recall_at": {},
                 "random_recall_at": {}}
    write_jsonl(folder / "clean.jsonl", gold)
    write_jsonl(folder / "noisy.jsonl", noisy)
    out["accuracy"]["clean"] = fit("clean", folder / "clean.jsonl")
    out["accuracy"]["noisy"] = fit("noisy", folder / "noisy.jsonl")

    t = time.perf_counter()
    method = "tfidf" if quick else "minilm"
    session = ReviewSession(run, reviewer="simulated", seed=seed,
                            sources=[LabelErrorSource(method, folds=5, seed=seed, flagged_only=False, limit=None)])
    ranked = [it for it in session.items if it.kind == "label_error"]
    assert len(ranked) == n, (len(ranked), n)
    flagged = [it.row for it in ranked if it.context["flagged"]]
    out["ranking_seconds"] = time.perf_counter() - t
    out["cleanlab_flagged"] = {"rows": len(flagged), "precision": len(set(flagged) & flipped) / max(1, len(flagged)),
                               "recall": len(set(flagged) & flipped) / len(flipped)}
    log(f"  seed {seed} ranking ({method}): {out['ranking_seconds']:.0f} s; cleanlab flags {len(flagged)} rows, "
        f"precision {out['cleanlab_flagged']['precision']:.3f}, recall {out['cleanlab_flagged']['recall']:.3f}")
    perm = np.random.default_rng(seed + 1000).permutation(n)

    token = "bench-token"
    client = TestClient(create_app(session, token))
    done = 0
    for share in SHARES:
        key = f"{round(100 * share)}%"
        top = ranked[:round(share * n)]
        hits = sum(1 for it in top if it.row in flipped)
        out["precision_at"][key] = hits / len(top)
        out["recall_at"][key] = hits / len(flipped)
        out["random_recall_at"][key] = len(set(int(i) for i in perm[:len(top)]) & flipped) / len(flipped)
        for it in top[done:]:  # the simulated reviewer: the gold label, through the page's API
            g = gold[it.row]["label"]
            body = {"item_id": it.id, "action": "accept"} if g == it.given_label else \
                {"item_id": it.id, "action": "relabel", "label": g}
            r = client.post("/api/decisions", json=body, headers={"X-Review-Token": token})
            assert r.status_code == 200, r.text
        done = len(top)
        exported = export(session, folder / f"export-{key[:-1]}")
        out["accuracy"][f"reviewed_{key}"] = fit(f"reviewed-{key[:-1]}", Path(exported["out"]) / "train.jsonl")
        log(f"  seed {seed} top {key}: precision {out['precision_at'][key]:.3f}, recall {out['recall_at'][key]:.3f} "
            f"(random {out['random_recall_at'][key]:.3f}); {exported['train_changed']} labels fixed")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="TF-IDF ranking and TF-IDF retrains (~2 minutes)")
    args = ap.parse_args()
    if not SST2.is_dir():
        sys.exit(f"bench/review.py: {SST2} not found (SST-2 train/dev/test JSONL); nothing to do.")
    work = ROOT / "runs" / ("bench-review-quick" if args.quick else "bench-review")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    per_seed = [one_seed(s, args.quick, work, log) for s in SEEDS]
    keys = [f"{round(100 * s)}%" for s in SHARES]
    res = {
        "setup": {"data": "SST-2 (shared/data/sst2)", "train_rows": len(read_jsonl(SST2 / "train.jsonl")),
                  "test_rows": len(read_jsonl(SST2 / "test.jsonl")), "noise": NOISE, "seeds": list(SEEDS),
                  "ranking": ("TF-IDF + logistic regression" if args.quick else "MiniLM embeddings + logistic "
                              "regression") + ", 5-fold out-of-fold probabilities, cleanlab self-confidence order",
                  "retrained_model": "TF-IDF + logistic regression" if args.quick
                  else "MiniLM fine-tuned by llmopt (data → finetune, 1 epoch, max_length 64)",
                  "reviewer": "simulated: relabels each top-N row to its gold label (accepts it when the given label "
                              "is gold) via POST /api/decisions, then `review --export`"},
        "ranking": {"precision_at": {k: interval([s["precision_at"][k] for s in per_seed]) for k in keys},
                    "recall_at": {k: interval([s["recall_at"][k] for s in per_seed]) for k in keys}},
        "random": {"recall_at": {k: interval([s["random_recall_at"][k] for s in per_seed]) for k in keys}},
        "accuracy": {"clean": interval([s["accuracy"]["clean"] for s in per_seed]),
                     "noisy": interval([s["accuracy"]["noisy"] for s in per_seed]),
                     "reviewed": {k: interval([s["accuracy"][f"reviewed_{k}"] for s in per_seed]) for k in keys}},
        "cleanlab_flagged": {m: interval([s["cleanlab_flagged"][m] for s in per_seed])
                             for m in ("rows", "precision", "recall")},
        "per_seed": per_seed,
        "seconds": time.perf_counter() - t0,
        "quick": args.quick,
    }
    from llmopt.fsutil import atomic_write_json

    path = ROOT / "bench" / "results" / ("review.quick.json" if args.quick else "review.json")
    atomic_write_json(path, res)

    def fmt(d: dict, scale: float = 100) -> str:
        return f"{scale * d['mean']:.1f} [{scale * d['ci'][0]:.1f}, {scale * d['ci'][1]:.1f}]"

    print(f"\nlabel noise {100 * NOISE:.0f}% on {res['setup']['train_rows']} train rows, 3 seeds (mean [95% CI], %)")
    print(f"{'N':>5} {'precision@N':>20} {'recall@N':>20} {'random recall@N':>20} {'acc. reviewed':>20}")
    for k in keys:
        print(f"{k:>5} {fmt(res['ranking']['precision_at'][k]):>20} {fmt(res['ranking']['recall_at'][k]):>20} "
              f"{fmt(res['random']['recall_at'][k]):>20} {fmt(res['accuracy']['reviewed'][k]):>20}")
    print(f"test accuracy clean {fmt(res['accuracy']['clean'])}, noisy {fmt(res['accuracy']['noisy'])}")
    print(f"wrote {path.relative_to(ROOT)} in {res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
