"""The augment stage's work: variants per train row in resumable chunks, then de-duplication and the
label-preservation filter, with a reason for every dropped variant and provenance on every kept one."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmopt.data.augment.backtranslate import Translator, back_translate, batches
from llmopt.data.augment.eda import Synonyms, eda, rng_for


def norm(text: str) -> str:
    """The form duplicates are compared in: lower case, single spaces."""
    return " ".join(text.lower().split())


def generate_chunk(rows: list[dict], first_id: int, ops: list[str], rate: float, copies: int, seed: int,
                   synonyms: Synonyms | None, translator: Translator | None, batch_rows: int) -> dict[str, Any]:
    """Variants of rows[first_id:…] as {"variants": [{source_id, op, copy, text}], "failed": [...],
    "seconds": {op: s}}; a translator batch that failed twice is listed in `failed`, the others kept."""
    variants: list[dict] = []
    seconds: dict[str, float] = {}
    failed: list[dict] = []
    for op in ops:
        t0 = time.perf_counter()
        if op == "backtranslate":
            texts = [r["text"] for r in rows]
            bt = back_translate(texts, translator, batch_rows=batch_rows)
            variants += [{"source_id": first_id + i, "op": op, "copy": 0, "text": t} for i, t in sorted(bt.texts.items())]
            failed += [{**f, "start": f["start"] + first_id, "end": f["end"] + first_id} for f in bt.failed]
        else:
            for i, r in enumerate(rows):
                for c in range(copies):
                    sid = first_id + i
                    variants.append({"source_id": sid, "op": op, "copy": c,
                                     "text": eda(r["text"], op, rate, rng_for(seed, sid, op, c), synonyms)})
        seconds[op] = time.perf_counter() - t0
    return {"variants": variants, "failed": failed, "seconds": seconds, "rows": len(rows)}


def run_chunks(train: list[dict], work: Path, chunk_rows: int, make: Any) -> list[dict]:
    """Chunks of `chunk_rows` source rows, each written atomically to work/chunk-<start>.json; a chunk already
    there (from a killed run of the same config) is read back, not redone."""
    from llmopt import faults
    from llmopt.fsutil import atomic_write_json, read_json

    out = []
    for s, e in batches(len(train), chunk_rows):
        path = work / f"chunk-{s:09d}.json"
        if path.is_file():
            out.append({**read_json(path), "reused": True})
            continue
        chunk = make(train[s:e], s)
        atomic_write_json(path, chunk)
        faults.point("augment.chunk")
        out.append(chunk)
    return out


@dataclass
class Filter:
    """Label-preservation settings: classifier folder and τ, optional embedding folder and τ₂."""

    model_dir: Path | None = None
    min_prob: float = 0.5
    similarity_dir: Path | None = None
    min_similarity: float = 0.0
    allow_pickle: bool = False


def select(train: list[dict], labels: list[str], variants: list[dict], failed: list[dict],
           filt: Filter) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Kept variants (text, label, source_id, op) and dropped ones with their reason, plus filter statistics.

    Reasons, in the order they are checked: unchanged (the op could not change the row), duplicate_of_original
    (equals some original train row; `duplicate_of` names it), duplicate_variant (equals an earlier kept
    variant), label_prob_below_min (the classifier's probability of the source's label < τ),
    similarity_below_min (cosine to the source < τ₂); failed translation batches as translation_failed."""
    import numpy as np

    originals = {}
    for i, r in enumerate(train):
        originals.setdefault(norm(r["text"]), i)
    kept, dropped, seen = [], [], {}
    for v in variants:
        n = norm(v["text"])
        row = {"text": v["text"], "label": train[v["source_id"]]["label"], "source_id": v["source_id"], "op": v["op"]}
        if not n or n == norm(train[v["source_id"]]["text"]):
            dropped.append({**row, "reason": "unchanged"})
        elif n in originals:
            dropped.append({**row, "reason": "duplicate_of_original", "duplicate_of": originals[n]})
        elif n in seen:
            dropped.append({**row, "reason": "duplicate_variant", "duplicate_of": seen[n]})
        else:
            seen[n] = f"{v['source_id']}:{v['op']}:{v.get('copy', 0)}"
            kept.append(row)
    for f in failed:
        dropped += [{"source_id": i, "op": "backtranslate", "label": train[i]["label"], "text": None,
                     "reason": "translation_failed", "error": f["error"]} for i in range(f["start"], f["end"])]
    stats: dict[str, Any] = {}
    if filt.model_dir is not None and kept:
        from llmopt.data.augment.label_filter import label_probs

        index = {lab: i for i, lab in enumerate(labels)}
        probs = label_probs(filt.model_dir, [r["text"] for r in kept], [index[r["label"]] for r in kept],
                            filt.allow_pickle)
        src_probs = label_probs(filt.model_dir, [train[r["source_id"]]["text"] for r in kept],
                                [index[r["label"]] for r in kept], filt.allow_pickle)
        stats["label_prob"] = {"variants_p50": float(np.median(probs)), "sources_p50": float(np.median(src_probs))}
        keep = []
        for r, p, sp in zip(kept, probs, src_probs):
            r = {**r, "label_prob": round(float(p), 4)}
            if p < filt.min_prob:
                dropped.append({**r, "reason": "label_prob_below_min", "source_label_prob": round(float(sp), 4)})
            else:
                keep.append(r)
        kept = keep
    if filt.similarity_dir is not None and kept:
        from llmopt.data.augment.label_filter import cosine_to_source

        cos = cosine_to_source(filt.similarity_dir, [train[r["source_id"]]["text"] for r in kept],
                               [r["text"] for r in kept])
        stats["similarity_p50"] = float(np.median(cos))
        keep = []
        for r, c in zip(kept, cos):
            r = {**r, "similarity": round(float(c), 4)}
            (keep if c >= filt.min_similarity else dropped).append(
                r if c >= filt.min_similarity else {**r, "reason": "similarity_below_min"})
        kept = keep
    return kept, dropped, stats


def summary(ops: list[str], chunks: list[dict], kept: list[dict], dropped: list[dict]) -> dict[str, Any]:
    """Counts per op and reason, throughput per op, and a few examples of each."""
    generated = Counter(v["op"] for c in chunks for v in c["variants"])
    seconds = Counter()
    for c in chunks:
        seconds.update(c["seconds"])
    rows = sum(c["rows"] for c in chunks)
    by_op: dict[str, Counter] = {op: Counter() for op in ops}
    for d in dropped:
        by_op.setdefault(d["op"], Counter())[d["reason"]] += 1
    examples: dict[str, list] = {}
    for r in kept:
        if len(examples.setdefault(r["op"], [])) < 2:
            examples[r["op"]].append({"source_id": r["source_id"], "text": r["text"]})
    drop_examples: dict[str, list] = {}
    for d in dropped:
        if len(drop_examples.setdefault(d["reason"], [])) < 2:
            drop_examples[d["reason"]].append({k: d.get(k) for k in ("source_id", "op", "text", "label_prob",
                                                                     "similarity", "duplicate_of", "error")
                                               if d.get(k) is not None})
    return {
        "generated": {op: generated.get(op, 0) for op in ops},
        "kept": {op: sum(1 for r in kept if r["op"] == op) for op in ops},
        "dropped": dict(Counter(d["reason"] for d in dropped)),
        "dropped_by_op": {op: dict(c) for op, c in by_op.items()},
        "rows_per_s": {op: round(rows / seconds[op], 1) if seconds.get(op) else None for op in ops},
        "examples": examples,
        "drop_examples": drop_examples,
        "chunks_reused": sum(1 for c in chunks if c.get("reused")),
    }
