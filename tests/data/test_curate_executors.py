"""curate on its executors: in-process, a local process pool and a Dask LocalCluster keep the same rows with the
same reasons and duplicate_of; a worker killed mid-partition has its partition redone; memory stays bounded."""

import json
import os
import random
import tracemalloc
from pathlib import Path

import pytest

from llmopt.data.curate import partitions as P
from llmopt.data.curate.engine import curate_artifact
from llmopt.data.curate.executors import Dask, InProcess, Pool, make_executor
from llmopt.stages.curate import CurateConfig

os.environ.setdefault("OMP_NUM_THREADS", "1")
WORDS = ("the a film movie great bad story plot acting superb dull funny sad long short boring brilliant moving "
         "slow fast dark light warm cold quiet loud gentle bitter sweet honest clever").split()


def corpus(folder: Path, n: int = 600, seed: int = 0) -> tuple[Path, dict]:
    """Random sentences with planted exact copies (case/punctuation), near copies (one word changed), copies of
    dev/test rows and copies under another label; returns the artifact folder and the planted row ids."""
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16)))

    dev = [{"text": sentence(), "label": "pos"} for _ in range(15)]
    test = [{"text": sentence(), "label": "neg"} for _ in range(15)]
    train, planted = [], {"exact": {}, "near": {}, "contamination": set()}
    for i in range(n):
        r = rng.random()
        if train and r < 0.1:
            j = rng.randrange(len(train))
            train.append({"text": train[j]["text"].upper() + " !", "label": train[j]["label"]})
            planted["exact"][f"train-{i}"] = j
        elif train and r < 0.2:
            j = rng.randrange(len(train))
            ws = train[j]["text"].split()
            ws[rng.randrange(len(ws))] = "zzz"
            train.append({"text": " ".join(ws), "label": rng.choice(["pos", "neg"])})
            planted["near"][f"train-{i}"] = j
        elif r < 0.23:
            train.append({"text": rng.choice(dev + test)["text"], "label": "pos"})
            planted["contamination"].add(f"train-{i}")
        else:
            train.append({"text": sentence(), "label": rng.choice(["pos", "neg"])})
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("dev", dev), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "labels.json").write_text('{"labels": ["neg", "pos"]}')
    return folder, planted


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def outputs(out: Path) -> dict[str, str]:
    return {f: (out / f).read_text(encoding="utf-8") for f in ("train.jsonl", "dropped.jsonl", "changed.jsonl",
                                                                 "conflicts.jsonl")}


@pytest.fixture(scope="module")
def planted_corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("exec")
    src, planted = corpus(base / "src")
    cfg = CurateConfig(id="curate", chunk_rows=100, executor={"shards": 4})
    ref = curate_artifact(src, base / "ref_out", base / "ref_work", cfg)
    return base, src, planted, cfg, ref


def test_in_process_finds_what_was_planted(planted_corpus):
    base, _, planted, _, ref = planted_corpus
    dropped = {d["id"]: d for d in read(base / "ref_out" / "dropped.jsonl")}
    for rid in planted["contamination"]:
        assert dropped[rid]["reason"].startswith("contamination_"), rid
    for rid, j in planted["exact"].items():  # an exact copy goes, as a duplicate (or with its cluster's conflict)
        assert rid in dropped, rid
    found = sum(rid in dropped for rid in planted["near"])
    assert found >= 0.9 * len(planted["near"])
    assert ref["dropped"]["exact_duplicate"] > 10 and ref["dropped"]["near_duplicate"] > 10
    assert ref["label_conflicts"]["groups"] > 0 and ref["chunks"] == 6 and ref["executor"]["kind"] == "inprocess"


def test_pool_and_dask_keep_the_same_rows_as_in_process(planted_corpus):
    base, src, _, cfg, ref = planted_corpus
    expected = outputs(base / "ref_out")
    with Pool(2) as pool:
        m = curate_artifact(src, base / "pool_out", base / "pool_work", cfg, pool)
        assert m["executor"] == {"kind": "pool", "workers": 2, "shards": 4}
        assert len(set(pool.pids())) == 2 and os.getpid() not in pool.pids()
    assert outputs(base / "pool_out") == expected
    assert m["dropped"] == ref["dropped"] and m["rows_out"] == ref["rows_out"]
    pytest.importorskip("distributed")
    with Dask("local", workers=2, processes=False) as dask:
        m = curate_artifact(src, base / "dask_out", base / "dask_work", cfg, dask)
        assert m["executor"]["kind"] == "dask" and len(dask.client.scheduler_info()["workers"]) == 2
    assert outputs(base / "dask_out") == expected


def test_small_verification_batches_keep_the_same_rows(planted_corpus, monkeypatch):
    """Dense LSH buckets are verified in bounded batches; the batch size must not change a decision."""
    from llmopt.data.curate import partitions as P

    base, src, _, cfg, ref = planted_corpus
    monkeypatch.setattr(P, "MAX_PAIRS", 7)
    monkeypatch.setattr(P, "MAX_ROWS", 5)
    m = curate_artifact(src, base / "small_out", base / "small_work", cfg)
    assert outputs(base / "small_out") == outputs(base / "ref_out")
    assert m["dedup"]["near_pairs"] == ref["dedup"]["near_pairs"] > 0


def test_a_worker_killed_mid_partition_is_redone(planted_corpus, tmp_path, monkeypatch):
    base, src, _, cfg, _ = planted_corpus
    expected = outputs(base / "ref_out")
    flag = tmp_path / "kill-once"
    flag.write_text("")
    monkeypatch.setenv(P.KILL_ONCE, str(flag))  # the first worker to claim it dies after writing all but the .jsonl
    with Pool(2) as pool:
        curate_artifact(src, tmp_path / "out", tmp_path / "work", cfg, pool)
    assert not flag.exists() and Path(str(flag) + ".claimed").exists()  # a worker really died
    assert outputs(tmp_path / "out") == expected


def test_a_failed_run_keeps_only_complete_partitions_and_a_rerun_ends_identical(planted_corpus, tmp_path,
                                                                                 monkeypatch):
    base, src, _, cfg, _ = planted_corpus
    expected = outputs(base / "ref_out")
    flag = tmp_path / "kill-once"
    flag.write_text("")
    monkeypatch.setenv(P.KILL_ONCE, str(flag))
    work = tmp_path / "work"
    with Pool(2, retries=0) as pool, pytest.raises(RuntimeError, match="lost its worker"):
        curate_artifact(src, tmp_path / "out", work, cfg, pool)
    assert not (tmp_path / "out" / "train.jsonl").exists()
    done = {p.name.split(".")[0] for p in work.glob("pass1-*.jsonl")}
    half = {p.name.split(".")[0] for p in work.glob("pass1-*.meta.json")} - done
    assert half  # the killed partition wrote its other files but was never committed
    monkeypatch.delenv(P.KILL_ONCE)
    m = curate_artifact(src, tmp_path / "out", work, cfg)
    assert m["chunks_reused"] == len(done) and m["chunks"] == 6
    assert outputs(tmp_path / "out") == expected


def test_parquet_input_streams_by_row_group_and_matches_jsonl(planted_corpus, tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    base, src, _, cfg, _ = planted_corpus
    pq_src = tmp_path / "src"
    pq_src.mkdir()
    for f in ("dev.jsonl", "test.jsonl", "labels.json"):
        (pq_src / f).write_bytes((src / f).read_bytes())
    rows = read(src / "train.jsonl")
    pq.write_table(pa.Table.from_pylist(rows), pq_src / "train.parquet", row_group_size=100)
    assert len(list(P.scan(pq_src / "train.parquet", 100))) == 6
    curate_artifact(pq_src, tmp_path / "out", tmp_path / "work", cfg)
    assert outputs(tmp_path / "out") == outputs(base / "ref_out")


def test_executor_config_names_one_engine():
    from pydantic import ValidationError

    assert isinstance(make_executor(CurateConfig(id="c").executor), InProcess)
    assert isinstance(make_executor(CurateConfig(id="c", executor={"kind": "pool", "workers": 3}).executor), Pool)
    with pytest.raises(ValidationError, match="needs an address"):
        CurateConfig(id="c", executor={"kind": "dask"})
    with pytest.raises(ValidationError, match="for kind 'dask' only"):
        CurateConfig(id="c", executor={"kind": "pool", "address": "tcp://127.0.0.1:8786"})


def _sized_corpus(folder: Path, mb: float, seed: int = 1) -> int:
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(4000)]
    folder.mkdir()
    size = 0
    with open(folder / "train.jsonl", "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            line = json.dumps({"text": " ".join(rng.choices(vocab, k=90)), "label": rng.choice("ab")}) + "\n"
            f.write(line)
            size += len(line)
    for s, text in (("dev", "one held out row"), ("test", "another quite different sentence")):
        (folder / f"{s}.jsonl").write_text(json.dumps({"text": text, "label": "a"}) + "\n")
    (folder / "labels.json").write_text('{"labels": ["a", "b"]}')
    return size


def test_memory_stays_bounded_on_a_corpus_larger_than_the_cap(tmp_path, monkeypatch):
    """Peak traced Python/numpy memory (tracemalloc) of curate on a 0.75 MB and a 3 MB corpus: flat, and well
    under the larger corpus (rows stay on disk; signatures, band keys and pairs live per partition or per shard).
    The MinHash block is a fixed buffer (16k shingles: ~3 MB at 16 permutations), set to 2k shingles here so the
    assertion sees what grows with the corpus."""
    from llmopt.data.curate import dedup

    monkeypatch.setattr(dedup, "SIGNATURE_BATCH_SHINGLES", 2048)
    cfg = CurateConfig(id="c", chunk_rows=200, dedup={"num_perm": 16, "unit": "word", "shingle": 2},
                       executor={"shards": 8})
    small, big = _sized_corpus(tmp_path / "s", 0.75), _sized_corpus(tmp_path / "b", 3.0)
    curate_artifact(tmp_path / "s", tmp_path / "warm", tmp_path / "warm_work", cfg)  # imports, caches
    peaks = {}
    for name in ("s", "b"):
        tracemalloc.start()
        try:
            m = curate_artifact(tmp_path / name, tmp_path / f"{name}_out", tmp_path / f"{name}_work", cfg)
            peaks[name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert m["rows_out"]["train"] == m["rows_in"]["train"] > 1000
    assert peaks["b"] < big / 2.5, f"peak {peaks['b'] / 1e6:.2f} MB for a {big / 1e6:.1f} MB corpus"
    assert peaks["b"] < 1.5 * peaks["s"], (peaks, small, big)


def test_augment_chunks_on_a_pool_equal_the_in_process_chunks(tmp_path):
    from llmopt.data.augment.build import generate_chunk, run_chunks
    from llmopt.stages.augment import AugmentConfig, _run_chunks_on_executor

    rng = random.Random(3)
    train = [{"text": " ".join(rng.choice(WORDS) for _ in range(10)), "label": "pos"} for _ in range(50)]
    cfg = AugmentConfig(id="aug", ops=["swap", "delete"], copies=2, chunk_rows=10,
                        executor={"kind": "pool", "workers": 2})
    ref = run_chunks(train, tmp_path / "ref", 10, lambda rows, first: generate_chunk(
        rows, first, ["swap", "delete"], cfg.rate, 2, 7, None, None, 1))
    (tmp_path / "pool").mkdir()
    (tmp_path / "ref" / "chunk-000000020.json").replace(tmp_path / "pool" / "chunk-000000020.json")  # a finished one
    got = _run_chunks_on_executor(cfg, train, tmp_path / "pool", 7)
    assert [c["variants"] for c in got] == [c["variants"] for c in ref] and len(got) == 5
    assert [bool(c.get("reused")) for c in got] == [False, False, True, False, False]
    assert len({v["text"] for c in got for v in c["variants"]}) > 100
