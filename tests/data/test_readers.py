import json
from pathlib import Path

import pytest

from llmopt.data.readers import read_examples, read_rotten_tomatoes
from llmopt.data.splits import check_splits, stratified_split
from llmopt.errors import DataError
from llmopt.stages.data import DataConfig, load_splits
from tests.conftest import make_rows, write_jsonl


def _cfg(**source) -> DataConfig:
    return DataConfig(id="data", source=source)


def test_jsonl_roundtrip(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", make_rows(10))
    ex = read_examples(p, "auto", "text", "label")
    assert len(ex) == 10 and ex[0].label == "positive" and ex[0].where == f"{p}:1"


def test_bad_json_line_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok", "label": "a"}\n{"text": "broken", "label": \n')
    with pytest.raises(DataError, match=rf"{p}:2: invalid JSON"):
        read_examples(p, "auto", "text", "label")


def test_missing_column(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"sentence": "ok", "label": "a"}\n')
    with pytest.raises(DataError, match=rf"{p}:1: missing column 'text' \(found: sentence, label\)"):
        read_examples(p, "auto", "text", "label")


def test_column_mapping(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("sentence,y\nhello there,pos\nbad day,neg\n")
    ex = read_examples(p, "auto", "sentence", "y")
    assert [(e.text, e.label) for e in ex] == [("hello there", "pos"), ("bad day", "neg")]


def test_empty_text(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok", "label": "a"}\n{"text": "   ", "label": "b"}\n')
    with pytest.raises(DataError, match=rf"{p}:2: empty text"):
        read_examples(p, "auto", "text", "label")


@pytest.mark.parametrize("label", ["null", '""', "NaN", "1.5", "[1]", "true"])
def test_bad_labels(tmp_path, label):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok", "label": "a"}\n{"text": "x", "label": ' + label + "}\n")
    with pytest.raises(DataError, match=rf"{p}:2:"):
        read_examples(p, "auto", "text", "label")


def test_integer_labels_become_strings(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok", "label": 1}\n{"text": "x", "label": 0.0}\n')
    assert [e.label for e in read_examples(p, "auto", "text", "label")] == ["1", "0"]


def test_non_utf8_names_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    with pytest.raises(DataError, match=rf"{p}:2: not valid UTF-8"):
        read_examples(p, "auto", "text", "label")


def test_bom_and_crlf_are_fine(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes("\ufefftext,label\r\nhello,a\r\nworld,b\r\n".encode("utf-8"))
    assert [(e.text, e.label) for e in read_examples(p, "auto", "text", "label")] == [("hello", "a"), ("world", "b")]


def test_tsv_and_extra_field_error(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("text\tlabel\nfine\ta\ntoo\tmany\tfields\n")
    with pytest.raises(DataError, match=rf"{p}:3: more fields than the header"):
        read_examples(p, "auto", "text", "label")


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a b", "c d"], "label": ["x", "y"]}), p)
    assert [e.label for e in read_examples(p, "auto", "text", "label")] == ["x", "y"]


def test_save_to_disk_with_classlabel_and_splits(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    feats = Features({"sentence": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    rows = make_rows(40)
    d = {"sentence": [r["text"] for r in rows], "label": [int(r["label"] == "positive") for r in rows]}
    ds = DatasetDict(train=Dataset.from_dict(d, features=feats), validation=Dataset.from_dict(d, features=feats).select(range(10)))
    ds.save_to_disk(str(tmp_path / "ds"))
    splits, _ = load_splits(_cfg(path=str(tmp_path / "ds"), text_column="sentence"), seed=0)
    assert len(splits["dev"]) == 10  # 'validation' is used as dev, test carved from train
    assert {e.label for e in splits["train"]} == {"neg", "pos"}
    assert len(splits["test"]) == 4 and len(splits["train"]) == 36


def test_unknown_format_needs_explicit_format(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("x")
    with pytest.raises(DataError, match="Set `format:`"):
        read_examples(p, "auto", "text", "label")


def test_one_class_only(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": "a"} for i in range(30)])
    splits, name = load_splits(_cfg(path=str(p)), seed=0)
    with pytest.raises(DataError, match="one class only"):
        check_splits(splits, name)


def test_unknown_label_in_test_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_rows(20))
    test = write_jsonl(tmp_path / "test.jsonl", make_rows(4) + [{"text": "meh", "label": "neutral"}])
    splits, name = load_splits(_cfg(train=str(train), test=str(test)), seed=0)
    with pytest.raises(DataError, match=rf"{test}:5: label 'neutral' in the test split never occurs in train"):
        check_splits(splits, name)


def test_empty_split_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_rows(20))
    dev = tmp_path / "dev.jsonl"
    dev.write_text("")
    with pytest.raises(DataError, match=rf"{dev}: no data rows"):  # names the empty file, not train
        load_splits(_cfg(train=str(train), dev=str(dev)), seed=0)


def test_stratified_split_keeps_proportions_and_is_seeded():
    from llmopt.data.readers import Example

    ex = [Example(f"t{i}", "a" if i < 80 else "b", "") for i in range(100)]
    rest, held = stratified_split(ex, 0.1, seed=1)
    assert len(held) == 10 and sum(e.label == "b" for e in held) == 2
    assert {e.text for e in rest} | {e.text for e in held} == {e.text for e in ex}
    assert [e.text for e in stratified_split(ex, 0.1, seed=1)[1]] == [e.text for e in held]
    assert [e.text for e in stratified_split(ex, 0.1, seed=2)[1]] != [e.text for e in held]


def test_split_fractions_from_one_file(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", make_rows(100))
    splits, _ = load_splits(_cfg(path=str(p)), seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 80, "test": 10, "dev": 10}
    texts = [e.text for s in splits.values() for e in s]
    assert len(texts) == len(set(texts)) == 100


def test_rotten_tomatoes_builtin():
    ex = read_rotten_tomatoes()
    assert len(ex) == 12752
    assert {e.label for e in ex} == {"fresh", "rotten"}
    assert len({e.text for e in ex}) == len(ex) and all(e.text.strip() for e in ex)


def test_data_stage_writes_artifact(tmp_path):
    from llmopt.data.artifact import load_data_artifact
    from llmopt.stages.base import StageContext
    from llmopt.stages.data import run

    p = write_jsonl(tmp_path / "d.jsonl", make_rows(60))
    ctx = StageContext(run_dir=tmp_path, stage_dir=tmp_path / "s", seed=0, threads=1)
    res = run(_cfg(path=str(p)), ctx)
    data = load_data_artifact(ctx.out_dir)
    assert data.labels == ["negative", "positive"]
    assert res.metrics["rows"] == {"train": 48, "dev": 6, "test": 6}
    assert json.loads((ctx.out_dir / "labels.json").read_text()) == {"labels": ["negative", "positive"]}
    assert str(p) in res.metrics["input_files"]
