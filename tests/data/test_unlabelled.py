"""The data stage's unlabelled.jsonl: rows the caps leave out, or an `unlabelled:` file."""

from __future__ import annotations

import pytest

from llmopt.fsutil import read_jsonl
from tests.compression.conftest import make_ctx
from tests.conftest import make_rows, write_jsonl


def _data(tmp_path, source: dict, **kw):
    from llmopt.stages.data import DataConfig, run

    ctx = make_ctx(tmp_path, "00-data", {})
    m = run(DataConfig(id="data", source=source, length_tokenizer=None, **kw), ctx).metrics
    return m, ctx.out_dir


def test_rows_the_caps_leave_out_become_unlabelled_text_never_test_rows(tmp_path):
    rows = make_rows(100)
    src = write_jsonl(tmp_path / "all.jsonl", rows)
    m, art = _data(tmp_path, {"path": str(src)}, max_train_rows=20, max_dev_rows=4, max_test_rows=5)
    split = {s: [r["text"] for r in read_jsonl(art / f"{s}.jsonl")] for s in ("train", "dev", "test")}
    unlabelled = [r["text"] for r in read_jsonl(art / "unlabelled.jsonl")]
    assert all(set(r) == {"text"} for r in read_jsonl(art / "unlabelled.jsonl"))  # text only: no labels leak
    # 100 rows: 10 test and 10 dev carved out, 80 train; caps keep 20 train and 4 dev: 60 + 6 rows left out
    assert m["unlabelled_rows"] == len(unlabelled) == 66
    assert not set(unlabelled) & (set(split["train"]) | set(split["dev"]) | set(split["test"]))
    all_texts = {r["text"] for r in rows}
    assert set(unlabelled) | set(split["train"]) | set(split["dev"]) | set(split["test"]) < all_texts  # 5 test out

    _, art2 = _data(tmp_path / "off", {"path": str(src)}, max_train_rows=20, rest_as_unlabelled=False)
    assert not (art2 / "unlabelled.jsonl").exists()


def test_an_unlabelled_file_joins_without_held_out_texts(tmp_path):
    src = write_jsonl(tmp_path / "all.jsonl", make_rows(60))
    m0, art0 = _data(tmp_path / "a", {"path": str(src)})
    test_text = read_jsonl(art0 / "test.jsonl")[0]["text"]
    (tmp_path / "more.txt").write_text(f"an unseen review\n\n{test_text}\nan unseen review\nanother one\n")
    m, art = _data(tmp_path / "b", {"path": str(src), "unlabelled": str(tmp_path / "more.txt")})
    assert m0["unlabelled_rows"] == 0 and not (art0 / "unlabelled.jsonl").exists()
    assert [r["text"] for r in read_jsonl(art / "unlabelled.jsonl")] == ["an unseen review", "another one"]
    write_jsonl(tmp_path / "more.jsonl", [{"body": "x"}])
    from llmopt.errors import DataError

    with pytest.raises(DataError, match=r"more.jsonl:1: missing column 'text'"):
        _data(tmp_path / "c", {"path": str(src), "unlabelled": str(tmp_path / "more.jsonl")})
