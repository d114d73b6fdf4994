"""augment stage: EDA (WordNet synonyms, insertion, swap, deletion), n-gram sampling and back-translation of the
train split, a label-preservation filter, and two outputs — an augmented data artifact (`finetune` takes
`data: <this id>`) and a transfer set for `distill` (`transfer: <this id>`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from llmopt.data.curate.config import ExecutorConfig
from llmopt.stages.base import ModelRef, StageConfig, StageContext, StageRef, StageResult, Strict, model_ref_str

Op = Literal["synonym", "insert", "swap", "delete", "ngram", "backtranslate"]


class ApertiumTranslator(Strict):
    """Rule-based round trip through the `apertium` command (Debian apertium-eng-spa)."""

    kind: Literal["apertium"] = "apertium"
    forward: str = Field("eng-spa", pattern=r"^[a-z]+-[a-z]+$")
    backward: str = Field("spa-eng", pattern=r"^[a-z]+-[a-z]+$")
    batch_rows: int = Field(200, ge=1, description="rows per apertium call")


class MarianTranslator(Strict):
    """Round trip through two local MarianMT folders (English→pivot, pivot→English)."""

    kind: Literal["marian"] = "marian"
    forward: ModelRef
    backward: ModelRef
    batch_rows: int = Field(16, ge=1)
    max_new_tokens: int = Field(128, ge=1)


class LabelFilter(Strict):
    """Keep a variant only if `model` gives the source's label probability ≥ min_prob (and, with
    `similarity_model`, its sentence embedding has cosine ≥ min_similarity to the source's)."""

    model: ModelRef
    min_prob: float = Field(0.5, ge=0, le=1)
    similarity_model: ModelRef | None = None
    min_similarity: float = Field(0.8, ge=-1, le=1)


class AugmentConfig(StageConfig):
    """Augment a data stage's train split; dev and test are copied unchanged."""

    type: Literal["augment"] = "augment"
    data: StageRef = "data"
    ops: list[Op] = Field(["synonym", "insert", "swap", "delete"], min_length=1)
    rate: float = Field(0.1, gt=0, le=0.5, description="EDA α: share of a row's words each op changes (≥ 1 word)")
    copies: int = Field(1, ge=1, le=16, description="variants per row and EDA op (back-translation gives one)")
    translator: Annotated[ApertiumTranslator | MarianTranslator, Field(discriminator="kind")] | None = None
    filter: LabelFilter | None = None
    chunk_rows: int = Field(1000, ge=1, description="source rows per resumable work chunk")
    executor: ExecutorConfig = Field(ExecutorConfig(), description="where chunks run: inprocess (default), pool or "
                                     "dask, as for curate; a marian translator always runs in this process")

    @model_validator(mode="after")
    def _translator_iff_backtranslate(self) -> "AugmentConfig":
        if len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops {self.ops} lists an op twice; use `copies:` for more variants")
        if ("backtranslate" in self.ops) != (self.translator is not None):
            raise ValueError("op `backtranslate` needs a `translator:` ({kind: apertium} or {kind: marian, forward: "
                             "..., backward: ...}) and a translator needs `backtranslate` in ops")
        return self


def run(cfg: AugmentConfig, ctx: StageContext) -> StageResult:
    """Write artifacts/train.jsonl (originals, op 'original', plus kept variants with source_id and op),
    dev/test/labels.json unchanged, transfer.jsonl (kept variants only) and dropped.jsonl (reason per variant)."""
    import shutil

    from llmopt.data.artifact import load_data_artifact
    from llmopt.data.augment.build import Filter, generate_chunk, run_chunks, select, summary
    from llmopt.data.augment.eda import Synonyms, pos_source
    from llmopt.errors import DataError
    from llmopt.fsutil import atomic_write_jsonl

    src = ctx.artifacts_of(cfg.data)
    data = load_data_artifact(src)
    empty = [i for i, r in enumerate(data.train) if not str(r.get("text") or "").strip()]
    if len(empty) == len(data.train):
        raise DataError(f"augment '{cfg.id}': the train split of stage '{cfg.data}' ({src / 'train.jsonl'}) has no "
                        "non-empty text; check the data stage's text_column.")
    train = [r for r in data.train if str(r.get("text") or "").strip()]
    synonyms = wordnet = None
    if {"synonym", "insert"} & set(cfg.ops):
        from llmopt.data.augment.wordnet import load_wordnet

        wn = load_wordnet()
        synonyms, wordnet = Synonyms(wn), type(wn).__name__
    translator = None
    if cfg.translator is not None:
        from llmopt.data.augment.backtranslate import Apertium, Marian

        t = cfg.translator
        if t.kind == "apertium":
            translator = Apertium(t.forward, t.backward)
        else:  # opus-mt folders hold source.spm/target.spm, not the tokenizer files ctx.model_dir asks for
            from llmopt.models import check_model_dir, resolve_model_ref

            fw, bw = (check_model_dir(resolve_model_ref(model_ref_str(r), ctx.stage_dirs), need_tokenizer=False,
                                      allow_pickle=ctx.allow_pickle) for r in (t.forward, t.backward))
            translator = Marian(fw, bw, t.max_new_tokens, allow_pickle=ctx.allow_pickle)

    def make(rows: list[dict], first: int) -> dict:
        return generate_chunk(rows, first, list(cfg.ops), cfg.rate, cfg.copies, ctx.seed, synonyms, translator,
                              cfg.translator.batch_rows if cfg.translator else 1)

    if cfg.executor.kind == "inprocess" or (cfg.translator is not None and cfg.translator.kind == "marian"):
        chunks = run_chunks(train, ctx.stage_dir / "work", cfg.chunk_rows, make)
    else:
        chunks = _run_chunks_on_executor(cfg, train, ctx.stage_dir / "work", ctx.seed)
    variants = [v for c in chunks for v in c["variants"]]
    failed = [f for c in chunks for f in c["failed"]]
    f = cfg.filter
    filt = Filter(allow_pickle=ctx.allow_pickle) if f is None else Filter(
        ctx.model_dir(f.model), f.min_prob, ctx.model_dir(f.similarity_model) if f.similarity_model else None,
        f.min_similarity, ctx.allow_pickle)
    if filt.model_dir is not None:
        from llmopt.data.augment.label_filter import model_labels

        got = model_labels(filt.model_dir)
        if got != data.labels:
            from llmopt.errors import ModelError

            raise ModelError(f"augment '{cfg.id}': filter.model {filt.model_dir} predicts {got}, the data has labels "
                             f"{data.labels}. Use a classifier fine-tuned on this data (e.g. an earlier finetune stage).")
    kept, dropped, stats = select(train, data.labels, variants, failed, filt)
    out = ctx.out_dir
    originals = [{"text": r["text"], "label": r["label"], "source_id": i, "op": "original"} for i, r in enumerate(train)]
    atomic_write_jsonl(out / "train.jsonl", originals + kept)
    atomic_write_jsonl(out / "transfer.jsonl", kept)
    atomic_write_jsonl(out / "dropped.jsonl", dropped)
    for name in ("dev.jsonl", "test.jsonl", "labels.json"):
        shutil.copyfile(src / name, out / name)  # inside artifacts/, which only counts once DONE is written
    return StageResult({
        "source_stage": cfg.data,
        "source_rows": len(train),
        "empty_source_rows": len(empty),
        "ops": list(cfg.ops),
        "rate": cfg.rate,
        "copies": cfg.copies,
        "wordnet": wordnet,
        "pos_source": pos_source() if synonyms else None,
        "translator": translator.name if translator else None,
        "failed_batches": failed,
        "filter": None if f is None else {"model": model_ref_str(f.model), "min_prob": f.min_prob,
                                          "similarity_model": model_ref_str(f.similarity_model) if f.similarity_model else None,
                                          "min_similarity": f.min_similarity if f.similarity_model else None, **stats},
        "train_rows": len(originals) + len(kept),
        "transfer_rows": len(kept),
        **summary(list(cfg.ops), chunks, kept, dropped),
    })


def _run_chunks_on_executor(cfg: AugmentConfig, train: list[dict], work: Any, seed: int) -> list[dict]:
    """`run_chunks` with the chunks that are not in work/ yet run on `cfg.executor` (each task writes its own
    chunk file atomically, so a chunk whose worker died is redone)."""
    from llmopt.data.augment.backtranslate import batches
    from llmopt.data.curate.executors import make_executor
    from llmopt.fsutil import read_json

    work.mkdir(parents=True, exist_ok=True)
    out: dict[int, dict] = {}
    todo = []
    for s, e in batches(len(train), cfg.chunk_rows):
        path = work / f"chunk-{s:09d}.json"
        if path.is_file():
            out[s] = {**read_json(path), "reused": True}
        else:
            todo.append((train[s:e], s, list(cfg.ops), cfg.rate, cfg.copies, seed,
                         cfg.translator.model_dump() if cfg.translator else None, str(path)))
    with make_executor(cfg.executor) as ex:
        for _, chunk in ex.map_unordered(_chunk_task, todo):
            out[chunk.pop("_first")] = chunk
    return [out[s] for s in sorted(out)]


_SYNONYMS: list = []


def _chunk_task(rows: list[dict], first: int, ops: list[str], rate: float, copies: int, seed: int,
                translator: dict | None, path: str) -> dict:
    """One chunk of variants in a worker: WordNet loaded once per process, an apertium translator rebuilt here."""
    from pathlib import Path

    from llmopt import faults
    from llmopt.data.augment.build import generate_chunk
    from llmopt.fsutil import atomic_write_json

    synonyms = None
    if {"synonym", "insert"} & set(ops):
        if not _SYNONYMS:
            from llmopt.data.augment.eda import Synonyms
            from llmopt.data.augment.wordnet import load_wordnet

            _SYNONYMS.append(Synonyms(load_wordnet()))
        synonyms = _SYNONYMS[0]
    tr = None
    if translator is not None:
        from llmopt.data.augment.backtranslate import Apertium

        tr = Apertium(translator["forward"], translator["backward"])
    chunk = generate_chunk(rows, first, ops, rate, copies, seed, synonyms, tr,
                           translator["batch_rows"] if translator else 1)
    atomic_write_json(Path(path), chunk)
    faults.point("augment.chunk")
    return {**chunk, "_first": first}


def section(sid: str, m: dict, doc: Any) -> None:
    """What was generated, kept and dropped per operation (with reasons and examples), and how fast."""
    doc.h(2, f"Augmentation ({sid})")
    filt = m.get("filter")
    doc.p(f"{m['source_rows']:,} train rows of stage '{m['source_stage']}' → {m['transfer_rows']:,} new rows kept "
          f"(train now {m['train_rows']:,}). EDA rate α = {m['rate']:g}, {m['copies']} variant(s) per row and op"
          + (f"; WordNet synonyms by part of speech from {m['pos_source']}" if m.get("pos_source") else "")
          + (f"; back-translation: {m['translator']}" if m.get("translator") else "")
          + (f". Label filter: {filt['model']} must give the source's label p ≥ {filt['min_prob']:g}"
             + (f" and {filt['similarity_model']} cosine ≥ {filt['min_similarity']:g}" if filt.get("similarity_model")
                else "") if filt else ". No label filter") + ".")
    reasons = sorted({r for d in m["dropped_by_op"].values() for r in d})
    doc.table(["op", "generated", "kept", *reasons, "rows/s"],
              [[op, f"{m['generated'][op]:,}", f"{m['kept'][op]:,}",
                *(str(m["dropped_by_op"].get(op, {}).get(r, 0)) for r in reasons),
                "—" if m["rows_per_s"].get(op) is None else f"{m['rows_per_s'][op]:,.0f}"] for op in m["ops"]])
    if m.get("failed_batches"):
        doc.p(f"{len(m['failed_batches'])} translation batch(es) failed twice and were skipped (rows kept from the "
              f"others): " + "; ".join(f"rows {b['start']}–{b['end'] - 1}: {b['error']}" for b in m["failed_batches"][:3]))
    rows = [[op, str(e["source_id"]), e["text"]] for op, ex in m["examples"].items() for e in ex]
    rows += [[f"dropped: {r}", str(e.get("source_id")), str(e.get("text"))] for r, ex in m["drop_examples"].items()
             for e in ex]
    if rows:
        doc.table(["op / reason", "source row", "text"], rows)
