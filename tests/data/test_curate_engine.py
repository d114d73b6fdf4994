"""The curate engine on small artifacts: decontamination, dedup, label conflicts, outputs, resume, bad input."""

import json
import shutil
from pathlib import Path

import pytest

from llmopt.data.curate.engine import curate_artifact
from llmopt.errors import DataError
from llmopt.stages.curate import CurateConfig

LONG = [
    "a stirring , funny and finally transporting re-imagining of beauty and the beast",
    "apparently reassembled from the cutting-room floor of any given daytime soap",
    "the acting is superb and the story keeps you guessing until the very last scene",
    "a tedious exercise in style over substance that overstays its welcome by an hour",
    "one of the most original and affecting films of the year , full of wit and grace",
    "the jokes fall flat and the plot wanders aimlessly from one cliche to the next",
]


def write_artifact(folder: Path, train: list, dev: list, test: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("dev", dev), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "labels.json").write_text('{"labels": ["negative", "positive"]}')
    return folder


def rows(texts_labels):
    return [{"text": t, "label": lab} for t, lab in texts_labels]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def curate(tmp_path, train, dev, test, **cfg):
    src = write_artifact(tmp_path / "src", train, dev, test)
    out, work = tmp_path / "out", tmp_path / "work"
    m = curate_artifact(src, out, work, CurateConfig(id="curate", **cfg))
    return m, out, src


def test_decontamination_drops_train_copies_of_test_and_never_touches_dev_test(tmp_path):
    test = rows([(LONG[0], "positive"), (LONG[1], "negative")])
    dev = rows([(LONG[2], "positive")])
    train = rows([(LONG[0].upper(), "positive"),                                # exact (canonical) copy of test-0
                  (LONG[1].replace("daytime", "nighttime"), "negative"),        # near copy of test-1
                  (LONG[2] + " !", "positive"),                                 # copy of dev-0
                  (LONG[3], "negative"), (LONG[4], "positive")])
    m, out, src = curate(tmp_path, train, dev, test)
    for split in ("dev", "test"):
        assert (out / f"{split}.jsonl").read_bytes() == (src / f"{split}.jsonl").read_bytes()
    assert [r["text"] for r in read(out / "train.jsonl")] == [LONG[3], LONG[4]]
    dropped = {d["id"]: d for d in read(out / "dropped.jsonl")}
    assert dropped["train-0"]["reason"] == "contamination_exact" and dropped["train-0"]["duplicate_of"] == "test-0"
    assert dropped["train-1"]["reason"] == "contamination_near" and dropped["train-1"]["duplicate_of"] == "test-1"
    assert dropped["train-2"]["duplicate_of"] == "dev-0"
    assert m["dropped"] == {"contamination_exact": 2, "contamination_near": 1}
    assert m["rows_out"] == {"train": 2, "dev": 1, "test": 2}


def test_duplicates_keep_the_first_row_and_name_it(tmp_path):
    train = rows([(LONG[0], "positive"), (LONG[3], "negative"),
                  ("  " + LONG[0] + "  ", "positive"),                   # exact after whitespace normalization
                  (LONG[0].replace("funny", "witty"), "positive"),      # near
                  (LONG[5], "negative"), ("", "negative"), ("<p>" + LONG[4] + "</p>", "positive")])
    m, out, _ = curate(tmp_path, train, rows([("x y z", "negative")]), rows([("p q r", "positive")]))
    kept = read(out / "train.jsonl")
    assert [r["id"] for r in kept] == ["train-0", "train-1", "train-4", "train-6"]
    assert kept[3]["text"] == LONG[4]
    dropped = {d["id"]: d for d in read(out / "dropped.jsonl")}
    assert dropped["train-2"]["reason"] == "exact_duplicate" and dropped["train-2"]["duplicate_of"] == "train-0"
    assert dropped["train-3"]["reason"] == "near_duplicate" and dropped["train-3"]["duplicate_of"] == "train-0"
    assert dropped["train-5"]["reason"] == "empty"
    changed = {c["id"]: c for c in read(out / "changed.jsonl")}
    assert changed["train-6"]["changes"] == ["html"] and changed["train-6"]["after"] == LONG[4]
    assert m["changed"] == {"whitespace": 1, "html": 1}
    assert set(m["examples"]) >= {"exact_duplicate", "near_duplicate", "empty", "changed:html"}


def test_near_dedup_off_keeps_near_duplicates(tmp_path):
    train = rows([(LONG[0], "positive"), (LONG[0].replace("funny", "witty"), "positive")])
    m, out, _ = curate(tmp_path, train, rows([("x y z", "negative")]), rows([("p q r", "positive")]),
                       dedup={"near": False})
    assert len(read(out / "train.jsonl")) == 2 and m["dropped"] == {}


@pytest.mark.parametrize("policy,kept_label,dropped_reasons", [
    ("majority", "positive", {"exact_duplicate": 3}),   # 3:1 for positive: the kept row is relabelled
    ("drop", None, {"label_conflict": 4}),
    ("review", "negative", {"label_conflict": 3}),      # the first row stays as it is; the group goes to review
])
def test_label_conflict_policies(tmp_path, policy, kept_label, dropped_reasons):
    # the first-seen row says negative, three copies say positive
    train = rows([(LONG[0], "negative"), (LONG[0], "positive"), (LONG[0] + " .", "positive"),
                  (LONG[0], "positive"), (LONG[3], "negative")])
    m, out, _ = curate(tmp_path, train, rows([("x y z", "negative")]), rows([("p q r", "positive")]),
                       label_conflicts=policy)
    kept = {r["text"]: r["label"] for r in read(out / "train.jsonl")}
    assert kept.get(LONG[0]) == kept_label and kept[LONG[3]] == "negative"
    assert m["dropped"] == dropped_reasons
    groups = read(out / "conflicts.jsonl")
    assert len(groups) == 1 and groups[0]["labels"] == {"negative": 1, "positive": 3}
    assert [g["id"] for g in groups[0]["members"]] == ["train-0", "train-1", "train-2", "train-3"]
    assert m["label_conflicts"] == {"policy": policy, "groups": 1, "rows": 4}
    review = out / "review_items.jsonl"
    assert review.exists() == (policy == "review")
    if policy == "review":
        assert read(review)[0]["kind"] == "label_conflict"


def test_majority_relabels_the_kept_row(tmp_path):
    train = rows([(LONG[0], "negative"), (LONG[0], "positive"), (LONG[0], "positive")])
    m, out, _ = curate(tmp_path, train, rows([("x y z", "negative")]), rows([("p q r", "positive")]))
    assert read(out / "train.jsonl") == [{"id": "train-0", "text": LONG[0], "label": "positive"}]
    change = [c for c in read(out / "changed.jsonl") if "label_majority" in c["changes"]]
    assert change and change[0]["label_before"] == "negative"


def test_majority_tie_drops_the_cluster(tmp_path):
    train = rows([(LONG[0], "negative"), (LONG[0], "positive"), (LONG[3], "negative")])
    m, out, _ = curate(tmp_path, train, rows([("x y z", "negative")]), rows([("p q r", "positive")]))
    assert [r["text"] for r in read(out / "train.jsonl")] == [LONG[3]]
    assert m["dropped"] == {"label_conflict": 2}


def test_resume_replays_finished_chunks_and_ends_identical(tmp_path):
    train = rows([(f"{LONG[i % 6]} variant number {i % 90} of {i % 90 * 7}", "positive") for i in range(250)])
    src = write_artifact(tmp_path / "src", train, rows([("x y z", "negative")]), rows([(LONG[5], "positive")]))
    cfg = CurateConfig(id="curate", chunk_rows=100)
    ref = curate_artifact(src, tmp_path / "r_out", tmp_path / "r_work", cfg)
    # a kill after the first chunk's decisions were written: only they exist in the work folder
    work = tmp_path / "k_work"
    work.mkdir()
    for p in (tmp_path / "r_work").glob("pass1-000000.*"):
        shutil.copy(p, work / p.name)
    res = curate_artifact(src, tmp_path / "k_out", work, cfg)
    assert res["chunks"] == 3 and res["chunks_reused"] == 1 and ref["chunks_reused"] == 0
    for name in ("train.jsonl", "dropped.jsonl", "changed.jsonl", "conflicts.jsonl", "dev.jsonl", "test.jsonl"):
        assert (tmp_path / "k_out" / name).read_bytes() == (tmp_path / "r_out" / name).read_bytes(), name
    # rows of later chunks duplicate rows of the replayed first chunk: the replayed index must know them
    assert res["dropped"] == ref["dropped"] and sum(ref["dropped"].values()) >= 160


def test_empty_text_column_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="text of every one of its 3 rows is empty.*text_column"):
        curate(tmp_path, rows([("", "positive"), ("  ", "negative"), ("", "positive")]),
               rows([("x y z", "negative")]), rows([("p q r", "positive")]))


def test_a_row_without_text_names_file_and_line(tmp_path):
    with pytest.raises(DataError, match=r"train.jsonl:2: a row needs a string 'text'"):
        curate(tmp_path, [{"text": "ok fine", "label": "positive"}, {"sentence": "x", "label": "negative"}],
               rows([("x y z", "negative")]), rows([("p q r", "positive")]))
