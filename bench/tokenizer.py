"""Tokenizer benchmark → bench/results/tokenizer.json (keys merged, so the parts can run apart):

  quality             one row per tokenizer and corpus (SST-2, TREC from ../shared/data: trained on the train split,
                      measured on the test split): our BPE / Unigram / WordPiece (8k, NFKC, punctuation and digit
                      split, byte fallback where the algorithm has it) against the base tokenizers of MiniLM
                      (WordPiece, 30,522) and SmolLM2 (byte-level BPE, 49,152); plus `worst_split_words`
  train_mb_per_s      training throughput per algorithm and for sentencepiece (BPE and Unigram) on the same corpus
                      (SST-2 + TREC train), the same vocabulary size and the same thread count, timed side by side
                      (median of the repeats); floor: our BPE >= 1.0x sentencepiece BPE
  small_vocab_student --part student: a 3-layer student (teacher layers 0, 2, 4) under an 8k BPE vocabulary trained
                      on SST-2 (embeddings carried over from the teacher's) distilled across tokenizers from the
                      MiniLM SST-2 teacher, beside the teacher-layer student whose base vocabulary is trimmed to the
                      corpus (as in bench/compress.yaml); size, batch-1 latency, test accuracy retention, same
                      teacher, same run (one evaluate stage times all of them)

  .venv/bin/python bench/tokenizer.py                  # quality + throughput (a few minutes)
  .venv/bin/python bench/tokenizer.py --part student   # the students (MiniLM fine-tune + 2 distillations: an hour+)
  .venv/bin/python bench/tokenizer.py --quick [--part student]   # subsets / a tiny random BERT, 3 steps:
                                                       # plumbing, written to bench/results/tokenizer.quick.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

THREADS = int(os.environ.get("LLMOPT_BENCH_THREADS", "2"))
os.environ["RAYON_NUM_THREADS"] = str(THREADS)  # HF tokenizers' pool: read once, before tokenizers is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "tokenizer.json"
VOCAB = 8000
ALGORITHMS = ("bpe", "unigram", "wordpiece")


def read_texts(path: Path, limit: int | None = None) -> list[str]:
    rows = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def settings(algorithm: str, vocab_size: int = VOCAB):
    from llmopt.tokenization.config import TokenizerTrainConfig

    return TokenizerTrainConfig(algorithm=algorithm, vocab_size=vocab_size, min_frequency=2,
                                bytes="none" if algorithm == "wordpiece" else "byte_fallback")


def train_ours(texts: list[str], algorithm: str, folder: Path):
    """Train, save and load back as a later stage would (AutoTokenizer)."""
    from llmopt.models import load_tokenizer
    from llmopt.tokenization.train import save_tokenizer, train_tokenizer

    cfg = settings(algorithm)
    return load_tokenizer(save_tokenizer(train_tokenizer(texts, cfg), cfg.special_tokens, folder / algorithm))


# ---------------------------------------------------------------- quality
def part_quality(quick: bool) -> dict:
    from llmopt.llm import smollm2_path
    from llmopt.models import builtin_model_path, load_tokenizer
    from llmopt.tokenization.quality import quality, word_pieces, worst_split_words

    bases = {"minilm (wordpiece)": load_tokenizer(builtin_model_path("minilm")),
             "smollm2 (byte-level bpe)": load_tokenizer(smollm2_path())}
    rows, worst = [], {}
    limit, held_limit = (2000, 300) if quick else (None, None)
    for corpus in ("sst2", "trec"):
        train = read_texts(DATA / corpus / "train.jsonl", limit)
        held = read_texts(DATA / corpus / "test.jsonl", held_limit)
        with tempfile.TemporaryDirectory() as tmp:
            toks = {f"ours {a} {VOCAB // 1000}k": train_ours(train, a, Path(tmp)) for a in ALGORITHMS}
        toks.update(bases)
        for name, tok in toks.items():
            q = quality(tok, held)
            rows.append({"corpus": corpus, "tokenizer": name, **q})
            print(f"{corpus:5} {name:26} vocab {q['vocab_size']:6,}  tokens/word {q['fertility']:.3f}  "
                  f"split {100 * q['split_share']:5.1f}%  unk {100 * q['unk_rate']:5.2f}%  "
                  f"used {100 * q['vocab_utilization']:5.1f}%")
        ours_bpe = toks[f"ours bpe {VOCAB // 1000}k"]
        for name in bases:
            w = worst_split_words(bases[name], held, k=10, min_count=2)
            for row, mine in zip(w, word_pieces(ours_bpe, [r["word"] for r in w])):
                row["ours_bpe"] = mine
            worst[f"{corpus} / {name}"] = w
    return {"quality": rows, "worst_split_words": worst,
            "quality_setup": {"train": "the corpus's train split", "heldout": "its test split",
                              "ours": {a: settings(a).model_dump() for a in ALGORITHMS},
                              "word": "whitespace-separated; a token counts toward the word its first non-space "
                                      "character falls in", "quick": quick}}


# ---------------------------------------------------------------- throughput
def _time_ours(texts: list[str], algorithm: str, threads: int) -> float:
    from llmopt.tokenization.train import train_tokenizer

    # tokenizers reads TOKENIZERS_PARALLELISM at each call: "false" = one thread; else its RAYON_NUM_THREADS pool
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    t0 = time.perf_counter()
    train_tokenizer(texts, settings(algorithm))
    return time.perf_counter() - t0


def _time_spm(texts: list[str], model_type: str, threads: int) -> float:
    import sentencepiece as spm

    t0 = time.perf_counter()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=io.BytesIO(), model_type=model_type, vocab_size=VOCAB,
        num_threads=threads, character_coverage=1.0, byte_fallback=True, split_digits=True,
        normalization_rule_name="nfkc", input_sentence_size=0, shuffle_input_sentence=False,
        max_sentence_length=1 << 16, hard_vocab_limit=False, minloglevel=2)
    return time.perf_counter() - t0


def _speeds(texts: list[str], mb: float, threads: int, repeats: int) -> tuple[dict, dict]:
    runs = {**{a: (_time_ours, a) for a in ALGORITHMS},
            "sentencepiece": (_time_spm, "bpe"), "sentencepiece_unigram": (_time_spm, "unigram")}
    secs: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):  # side by side: each repeat runs every trainer once, in turn
        for name, (fn, arg) in runs.items():
            secs[name].append(fn(texts, arg, threads))
    speed = {k: mb / statistics.median(v) for k, v in secs.items()}
    ratio = speed["bpe"] / speed["sentencepiece"]
    for k in runs:
        print(f"{threads} thread(s) train {k:22} {speed[k]:7.3f} MB/s  ({statistics.median(secs[k]):.2f} s "
              f"for {mb:.2f} MB)")
    print(f"{threads} thread(s) BPE vs sentencepiece BPE: {ratio:.2f}x "
          f"(floor 1.0x: {'met' if ratio >= 1 else 'NOT met'})")
    return {**speed, "bpe_vs_sentencepiece": ratio, "floor_met": ratio >= 1.0}, secs


def part_speed(quick: bool) -> dict:
    texts = (read_texts(DATA / "sst2" / "train.jsonl") + read_texts(DATA / "trec" / "train.jsonl"))
    texts = texts[:3000] if quick else texts
    mb = sum(len(t.encode("utf-8")) + 1 for t in texts) / 1e6
    repeats = 1 if quick else 3
    speed, secs = _speeds(texts, mb, THREADS, repeats)
    single, secs1 = _speeds(texts, mb, 1, repeats) if THREADS > 1 else (speed, secs)
    return {"train_mb_per_s": speed, "train_mb_per_s_1_thread": single,
            "train_setup": {"corpus": "SST-2 train + TREC train", "mb": mb, "texts": len(texts), "vocab_size": VOCAB,
                            "threads": THREADS, "repeats": repeats, "seconds": secs, "seconds_1_thread": secs1,
                            "ours": "llmopt.tokenization.train_tokenizer (NFKC, punctuation + digit split, byte "
                                    "fallback for bpe/unigram), byte pieces and alphabet check included",
                            "sentencepiece": "SentencePieceTrainer (nfkc, split_digits, byte_fallback, character "
                                             "coverage 1.0, all sentences)", "quick": quick}}


# ---------------------------------------------------------------- the small-vocabulary student
FULL = {"model": "{builtin: minilm}", "layers": [0, 2, 4], "limits": "", "steps": "", "latency_runs": 300,
        "teacher_epochs": 3, "student_epochs": 5, "recover_epochs": 2}
QUICK = {**FULL, "layers": [0, 2], "limits": "\n    max_train_rows: 200\n    max_dev_rows: 100\n    max_test_rows: 200"
         "\n    rest_as_unlabelled: false",
         "steps": ", max_steps: 3", "latency_runs": 20}


def student_recipe(c: dict, model: str, quick: bool) -> str:
    src = "{" + ", ".join(f"{s}: {DATA / 'sst2' / f'{s}.jsonl'}" for s in ("train", "dev", "test")) + "}"
    tr = "learning_rate: 1.0e-4, batch_size: 32, max_length: 64" + c["steps"]
    return f"""\
version: 1
name: bench-tokenizer-student{'-quick' if quick else ''}
seed: 42
stages:
  - id: data
    type: data
    source: {src}{c['limits']}
  - id: teacher
    type: finetune
    model: {model}
    train: {{{tr}, epochs: {c['teacher_epochs']}}}
  - id: tok8k  # 8k BPE trained on SST-2 train; the student = teacher layers under it, rows carried over
    type: tokenizer
    base: teacher
    train: {{algorithm: bpe, vocab_size: {VOCAB}, lowercase: true, bytes: byte_fallback}}
    student_layers: {c['layers']}
  - id: student_small_vocab  # distilled across tokenizers; the same epochs as the trimmed student's two runs
    type: distill
    teacher: teacher
    student_model: tok8k
    train: {{{tr}, epochs: {c['student_epochs'] + c['recover_epochs']}, early_stopping_patience: 2}}
  - id: student  # as bench/compress.yaml: teacher layers, base vocabulary
    type: distill
    teacher: teacher
    layers: {c['layers']}
    train: {{{tr}, epochs: {c['student_epochs']}, early_stopping_patience: 2}}
  - id: student_trimmed  # its vocabulary trimmed to the corpus, with a distilled recovery
    type: prune
    model: student
    teacher: teacher
    vocab_trim: true
    vocab_splits: [train, dev]
    train: {{learning_rate: 5.0e-5, batch_size: 32, max_length: 64, epochs: {c['recover_epochs']}{c['steps']}}}
  - id: evaluate
    type: evaluate
    models: [teacher, student, student_trimmed, student_small_vocab]
    reference: teacher
    baselines: []
    split: test
    max_length: 64
    latency_runs: {c['latency_runs']}
"""


def part_student(quick: bool, fresh: bool) -> dict:
    from llmopt.pipeline import run_recipe
    from llmopt.rundir import stage_metrics

    c = QUICK if quick else FULL
    folder = ROOT / "runs" / "bench-tokenizer-student-recipe"
    folder.mkdir(parents=True, exist_ok=True)
    model = c["model"]
    if quick:  # a 6-layer 32-wide random BERT with MiniLM's tokenizer stands in for MiniLM
        sys.path.insert(0, str(ROOT / "bench"))
        from data_augment import tiny_bert

        model = str(tiny_bert(folder / "tiny-bert-6l"))
    recipe = folder / ("quick.yaml" if quick else "full.yaml")
    recipe.write_text(student_recipe(c, model, quick), encoding="utf-8")
    t0 = time.perf_counter()
    run_dir = run_recipe(recipe, runs_root=ROOT / "runs", resume=None if fresh else "latest",
                         argv=["bench/tokenizer.py", "--part", "student"] + (["--quick"] if quick else []))
    metrics = {sid: m for sid, _, m in stage_metrics(run_dir)}
    ev, t = metrics["evaluate"], metrics["evaluate"]["models"]["teacher"]
    rows = {}
    for name in ("teacher", "student", "student_trimmed", "student_small_vocab"):
        m = ev["models"][name]
        rows[name] = {"test_accuracy": m["accuracy"], "test_accuracy_ci": m["accuracy_ci"],
                      "accuracy_retention": m["accuracy"] / t["accuracy"], "size_mb": m["size_bytes"] / 1e6,
                      "params": m["params"], "latency_b1_p50_ms": m["latency_b1_p50_ms"],
                      "latency_b1_p95_ms": m["latency_b1_p95_ms"], "size_ratio": t["size_bytes"] / m["size_bytes"],
                      "speedup_b1": t["latency_b1_p50_ms"] / m["latency_b1_p50_ms"]}
        print(f"{name:20} acc {100 * m['accuracy']:5.1f}  retention {rows[name]['accuracy_retention']:.3f}  "
              f"{rows[name]['size_mb']:7.2f} MB  {m['params']:>11,} params  b1 p50 {m['latency_b1_p50_ms']:.2f} ms")
    tok = metrics["tok8k"]
    sv, tr = rows["student_small_vocab"], rows["student_trimmed"]
    return {"small_vocab_student": {
        "rows": rows,
        "small_vs_trimmed": {"retention_diff": sv["accuracy_retention"] - tr["accuracy_retention"],
                             "size_ratio": tr["size_mb"] / sv["size_mb"],
                             "latency_ratio": tr["latency_b1_p50_ms"] / sv["latency_b1_p50_ms"]},
        "vocab": {"small": tok["quality"]["vocab_size"], "trimmed": metrics["student_trimmed"].get("vocab_after"),
                  "teacher": tok["base_quality"]["vocab_size"]},
        "tokens_per_word_test": {"small": tok["quality"]["fertility"], "teacher": tok["base_quality"]["fertility"]},
        "embedding_init": tok["embedding_init"],
        "threads": ev["threads"], "n_test": ev["n"], "run_dir": str(run_dir), "quick": quick,
        "wall_seconds_this_invocation": round(time.perf_counter() - t0, 1),
        "stage_seconds": {sid: m.get("stage_seconds") for sid, m in metrics.items()}}}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="subsets, one repeat; the student part: a tiny BERT, 3 steps")
    ap.add_argument("--part", choices=["quality", "speed", "student", "default"], default="default",
                    help="default: quality + speed; student: the small-vocabulary student (heavy)")
    ap.add_argument("--fresh", action="store_true", help="student part: a new run instead of resuming the latest")
    args = ap.parse_args(argv)
    if not (DATA / "sst2" / "train.jsonl").is_file():
        print(f"skipped: {DATA} not found (the reference data lives in ../shared/data)")
        return 0
    os.chdir(ROOT)
    from llmopt.fsutil import update_json

    out = OUT.with_name("tokenizer.quick.json") if args.quick else OUT
    result: dict = {}
    if args.part in ("default", "quality"):
        result.update(part_quality(args.quick))
    if args.part in ("default", "speed"):
        result.update(part_speed(args.quick))
    if args.part == "student":
        result.update(part_student(args.quick, args.fresh))
    update_json(out, result)
    print(f"wrote {out.relative_to(ROOT)} ({', '.join(result)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
