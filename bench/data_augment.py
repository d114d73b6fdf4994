"""Augmentation benchmark: throughput per operation (and nlpaug's for the same operations where it runs
offline), and the measured gain, 3 seeds, on the full SST-2 test split:

  (a) MiniLM fine-tuned on 500 SST-2 train rows with and without the augment stage's rows (the `compare` stage:
      same seeds per arm, paired 95% t-interval over seeds);
  (b) the 3-layer student of bench/compress.yaml (teacher layers 0, 2, 4, same training settings) distilled from
      the full-SST-2 teacher with and without the augment stage's transfer set; the figure is accuracy retention
      (student / teacher test accuracy), paired over seeds.

The stages run as one llmopt recipe (written to runs/bench-augment*/recipe, resumable: a second run skips
finished stages); the distillation arms are run by this script with the distill stage's own `run`, one
folder per seed and arm (reused when finished). Merges its keys into bench/results/data.json by
read-modify-write (bench/data.py writes the cleaning keys): augmentation_rows_per_s, augmentation_gain.mean/.ci,
distill_transfer_gain.mean/.ci, plus the per-seed detail under augmentation_detail.

  .venv/bin/python bench/data_augment.py           # the full benchmark (hours on a laptop CPU)
  .venv/bin/python bench/data_augment.py --quick   # tiny subsets, a 6-layer 32-wide random BERT in place of
                                                   # MiniLM, 3 optimizer steps (a few minutes on 2 busy cores);
                                                   # writes bench/results/data.quick.json: plumbing, not results
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SST2 = ROOT.parent / "shared" / "data" / "sst2"
OUT = ROOT / "bench" / "results" / "data.json"
SEEDS = [1, 2, 3]
EDA_OPS = ["synonym", "insert", "swap", "delete"]

FULL = {"rows_500": 500, "max_dev": None, "max_test": None, "max_full_train": None, "steps": None,
        "throughput_rows": 6920, "bt_rows": 2000, "seeds": SEEDS}
QUICK = {"rows_500": 40, "max_dev": 40, "max_test": 100, "max_full_train": 60, "steps": 2,
         "throughput_rows": 1000, "bt_rows": 200, "seeds": [1, 2]}


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- throughput
def throughput(texts: list[str], bt_rows: int) -> dict:
    """Rows/s of each llmopt operation (one cold pass: WordNet lookups included) and of nlpaug's equivalents."""
    from llmopt.data.augment.backtranslate import Apertium, back_translate
    from llmopt.data.augment.eda import Synonyms, eda, pos_source, rng_for
    from llmopt.data.augment.wordnet import load_wordnet

    wn = load_wordnet()
    ours = {}
    for op in EDA_OPS:
        syn = Synonyms(wn)  # a cold synonym cache for every op: each pays its own WordNet lookups
        t0 = time.perf_counter()
        for i, t in enumerate(texts):
            eda(t, op, 0.1, rng_for(0, i, op, 0), syn)
        ours[op] = round(len(texts) / (time.perf_counter() - t0), 1)
    t0 = time.perf_counter()
    bt = back_translate(texts[:bt_rows], Apertium(), batch_rows=200)
    ours["backtranslate"] = round(len(bt.texts) / (time.perf_counter() - t0), 1)
    out = {"llmopt": ours, "rows": len(texts), "backtranslate_rows": bt_rows, "pos_source": pos_source()}
    try:  # nlpaug imports gdown (model downloads) at import time; none of the ops timed here download anything
        sys.modules.setdefault("gdown", types.ModuleType("gdown"))
        import nlpaug
        import nlpaug.augmenter.word as naw
    except ImportError as e:
        out["nlpaug"] = None
        out["nlpaug_note"] = f"not installed ({e}); pip install --no-deps nlpaug"
        return out
    theirs, notes = {}, {}
    for op, make in (("swap", lambda: naw.RandomWordAug(action="swap", aug_p=0.1)),
                     ("delete", lambda: naw.RandomWordAug(action="delete", aug_p=0.1)),
                     ("synonym", lambda: naw.SynonymAug(aug_src="wordnet", aug_p=0.1))):
        try:
            aug = make()
            t0 = time.perf_counter()
            for t in texts:
                aug.augment(t)
            theirs[op] = round(len(texts) / (time.perf_counter() - t0), 1)
        except Exception as e:  # noqa: BLE001 - recorded, not hidden
            theirs[op] = None
            notes[op] = f"{type(e).__name__}: {str(e)[:160]}"
    out.update({"nlpaug": theirs, "nlpaug_version": nlpaug.__version__, "nlpaug_errors": notes,
                "speedup_vs_nlpaug": {op: round(ours[op] / theirs[op], 2) for op in theirs if theirs[op]}})
    return out


# ---------------------------------------------------------------- the recipe for the gains
def tiny_bert(out: Path) -> Path:
    """--quick's stand-in for MiniLM: a 6-layer, 32-wide random BERT with MiniLM's tokenizer (6 layers, so the
    compress benchmark's student layers 0, 2, 4 exist), so the plumbing runs in minutes on a busy CPU."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from llmopt.models import builtin_model_path

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(builtin_model_path("minilm")))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def recipe(cfg: dict, model: str, distill: bool = True) -> str:
    src = (f"{{train: {SST2 / 'train.jsonl'}, dev: {SST2 / 'dev.jsonl'}, test: {SST2 / 'test.jsonl'}}}")
    lim = "".join(f"\n    {k}: {cfg[v]}" for k, v in (("max_dev_rows", "max_dev"), ("max_test_rows", "max_test"))
                  if cfg[v])
    steps = f", max_steps: {cfg['steps']}" if cfg["steps"] else ""
    ft = f"{{learning_rate: 1.0e-4, epochs: 3, batch_size: 32, max_length: 64{steps}}}"
    full_lim = f"\n    max_train_rows: {cfg['max_full_train']}" if cfg["max_full_train"] else ""
    return f"""\
version: 1
name: bench-augment{'-quick' if cfg['steps'] else ''}
seed: 42
stages:
  - id: data500
    type: data
    source: {src}
    max_train_rows: {cfg['rows_500']}{lim}
    length_tokenizer: null
  - id: teacher500
    type: finetune
    data: data500
    model: {model}
    train: {ft}
  - id: augment500
    type: augment
    data: data500
    ops: [synonym, insert, swap, delete, backtranslate]
    rate: 0.1
    copies: 2
    translator: {{kind: apertium}}
    filter: {{model: teacher500, min_prob: 0.5, similarity_model: {{builtin: minilm}}, min_similarity: 0.7}}
  - id: gain
    type: compare
    baseline: data500
    treatment: augment500
    model: {model}
    seeds: {cfg['seeds']}
    split: test
    train: {ft}
""" + (DISTILL_STAGES.format(src=src, full_lim=full_lim, lim=lim, model=model, ft=ft) if distill else "")


DISTILL_STAGES = """\
  - id: data
    type: data
    source: {src}{full_lim}{lim}
    length_tokenizer: null
  - id: teacher
    type: finetune
    data: data
    model: {model}
    train: {ft}
  - id: augment
    type: augment
    data: data
    ops: [synonym, delete, backtranslate]
    rate: 0.1
    translator: {{kind: apertium}}
    filter: {{model: teacher, min_prob: 0.5}}
"""


def distill_arms(run_dir: Path, cfg: dict, threads: int) -> dict:
    """The compress benchmark's 3-layer student, distilled per seed without and with the augmented transfer set."""
    from llmopt.eval.predictors import HFClassifier, predict_all
    from llmopt.fsutil import atomic_write_json, read_json
    from llmopt.stages.base import StageContext
    from llmopt.stages.compare import paired_interval
    from llmopt.stages.distill import DistillConfig, run

    dirs = {p.name.split("-", 1)[1]: p for p in sorted((run_dir / "stages").iterdir())}
    test = read_jsonl(dirs["data"] / "artifacts" / "test.jsonl")
    labels = read_json(dirs["data"] / "artifacts" / "labels.json")["labels"]
    y = [labels.index(r["label"]) for r in test]
    texts = [r["text"] for r in test]

    def acc(folder: Path) -> float:
        pred = predict_all(HFClassifier(folder), texts).argmax(1)
        return float(sum(int(p == t) for p, t in zip(pred, y)) / len(y))

    teacher_acc = acc(dirs["teacher"] / "artifacts" / "model")
    train = {"learning_rate": 1e-4, "epochs": 5, "batch_size": 32, "max_length": 64, "early_stopping_patience": 2}
    if cfg["steps"]:
        train.update(max_steps=cfg["steps"], epochs=1, early_stopping_patience=None)
    res: dict = {"teacher_test_accuracy": teacher_acc, "without": [], "with": []}
    for seed in cfg["seeds"]:
        for arm, transfer in (("without", None), ("with", "augment")):
            sdir = run_dir / "bench-distill" / f"{arm}-seed{seed}"
            done = sdir / "result.json"
            if not done.is_file():
                (sdir / "artifacts").mkdir(parents=True, exist_ok=True)
                ctx = StageContext(run_dir=run_dir, stage_dir=sdir, seed=seed, threads=threads, stage_dirs=dirs)
                m = run(DistillConfig(id=f"student-{arm}", teacher="teacher", layers=[0, 2, 4], transfer=transfer,
                                      unlabelled=False, train=train), ctx).metrics
                a = acc(sdir / "artifacts" / "model")
                atomic_write_json(done, {"seed": seed, "test_accuracy": a, "retention": a / teacher_acc,
                                         "transfer_rows": m["transfer_rows"]})
                shutil.rmtree(sdir / "checkpoints", ignore_errors=True)
            res[arm].append(read_json(done))
    res["retention_gain"] = paired_interval([r["retention"] for r in res["with"]],
                                            [r["retention"] for r in res["without"]])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny subsets and 3 optimizer steps: checks the plumbing")
    ap.add_argument("--fresh", action="store_true", help="a new run directory instead of resuming the latest")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-distill", action="store_true", help="only (a), the fine-tune gain: (b) trains a full-SST-2 "
                    "teacher and six students (most of the benchmark's hours); its keys are then left as they were")
    args = ap.parse_args()
    if not SST2.is_dir():
        sys.exit(f"bench/data_augment.py: {SST2} not found (SST-2 train/dev/test JSONL); nothing to do.")
    cfg = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    train = read_jsonl(SST2 / "train.jsonl")
    tp = throughput([r["text"] for r in train[: cfg["throughput_rows"]]], cfg["bt_rows"])
    print("augmentation rows/s:", json.dumps(tp["llmopt"]), "| nlpaug:", json.dumps(tp.get("nlpaug")), flush=True)

    from llmopt.pipeline import run_recipe

    name = "bench-augment-quick" if args.quick else "bench-augment"
    folder = ROOT / "runs" / f"{name}-recipe"
    folder.mkdir(parents=True, exist_ok=True)
    rpath = folder / "recipe.yaml"
    model = str(tiny_bert(folder / "tiny-bert-6l")) if args.quick else "{builtin: minilm}"
    rpath.write_text(recipe(cfg, model, distill=not args.no_distill), encoding="utf-8")
    run_dir = run_recipe(rpath, runs_root=ROOT / "runs", resume=None if args.fresh else "latest",
                         argv=sys.argv)
    gain = json.loads(next((run_dir / "stages").glob("*-gain/metrics.json")).read_text())
    aug = json.loads(next((run_dir / "stages").glob("*-augment500/metrics.json")).read_text())
    g = gain["accuracy_gain"]
    print(f"(a) augmentation gain on {gain['n_eval']} test rows: {100 * g['mean']:+.2f} points, 95% CI "
          f"[{100 * g['ci'][0]:+.2f}, {100 * g['ci'][1]:+.2f}] — {g['verdict']}; train rows {gain['n_train']}",
          flush=True)
    if not args.no_distill:
        d = distill_arms(run_dir, cfg, args.threads or 2)
        dg = d["retention_gain"]
        print(f"(b) distill transfer gain (accuracy retention): {100 * dg['mean']:+.2f} points, 95% CI "
              f"[{100 * dg['ci'][0]:+.2f}, {100 * dg['ci'][1]:+.2f}] — {dg['verdict']}", flush=True)
    results = {
        "augmentation_rows_per_s": tp["llmopt"],
        "augmentation_gain": {"mean": g["mean"], "ci": g["ci"], "verdict": g["verdict"], "diffs": g["diffs"]},
        **({} if args.no_distill else {"distill_transfer_gain": {
            "mean": dg["mean"], "ci": dg["ci"], "verdict": dg["verdict"], "diffs": dg["diffs"],
            "measure": "accuracy retention (student/teacher)"}}),
        "augmentation_detail": {
            "throughput": tp,
            "finetune_500": {k: gain[k] for k in ("seeds", "n_train", "n_eval", "accuracy", "macro_f1",
                                                   "macro_f1_gain")},
            "augment_500": {k: aug[k] for k in ("generated", "kept", "dropped", "transfer_rows", "rows_per_s",
                                                "filter", "pos_source", "translator")},
            **({} if args.no_distill else {"distill": {k: d[k] for k in ("teacher_test_accuracy", "without", "with")}}),
            "run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
            "seconds": round(time.perf_counter() - t_start, 1),
            "quick": args.quick,
        },
    }
    target = OUT if not args.quick else OUT.with_name("data.quick.json")
    from llmopt.fsutil import update_json

    update_json(target, results)
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
