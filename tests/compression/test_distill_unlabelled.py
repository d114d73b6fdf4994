"""The distill stage reads the data stage's unlabelled.jsonl as teacher-labelled transfer text."""

from __future__ import annotations

from tests.compression.conftest import make_ctx
from tests.conftest import write_jsonl


def test_distill_adds_the_data_stage_unlabelled_texts(tmp_path, tiny_teacher, data_stage):
    from llmopt.stages.distill import DistillConfig, run

    extra = [f"an unlabelled sentence number {i}" for i in range(30)]
    write_jsonl(data_stage / "artifacts" / "unlabelled.jsonl", [{"text": t} for t in extra])
    train = dict(max_steps=2, batch_size=8, epochs=1, max_length=32, early_stopping_patience=None)
    runs = {}
    for name, kw in (("all", {}), ("capped", {"max_transfer_rows": 10}), ("off", {"unlabelled": False})):
        ctx = make_ctx(tmp_path, f"01-{name}", {"data": data_stage})
        runs[name] = run(DistillConfig(id=name, teacher=str(tiny_teacher), layers=[0], train=train, **kw),
                         ctx).metrics
    assert runs["all"]["transfer_rows"] == 48 + 30 and runs["all"]["data_unlabelled_rows"] == 30
    assert runs["capped"]["transfer_rows"] == 48 + 10 and runs["capped"]["unlabelled_rows"] == 10
    assert runs["off"]["transfer_rows"] == 48 and runs["off"]["unlabelled_rows"] == 0
