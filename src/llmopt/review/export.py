"""`llmopt review RUN_DIR --export [OUT]`: the reviewed data as files a recipe reads.

OUT (default RUN_DIR/review/export/) gets:
- train.jsonl, dev.jsonl, test.jsonl, labels.json: the run's train stage data (the data its fine-tune read) with
  every decision on one of its train rows applied — relabel sets the label, edit the text (and label, if given),
  reject drops the row, accept keeps it. Each row is {text, label, provenance: {stage, row[, item, action,
  reviewer, at, label_before, text_before]}}; the data stage reads it as
  `source: {train: OUT/train.jsonl, dev: OUT/dev.jsonl, test: OUT/test.jsonl}` (extra keys are ignored).
- reviewed.jsonl: every decided item of every kind (test predictions too — kept apart from train so a test row
  never leaks into training), with the final text/label and its provenance.
- sft.jsonl: edited drafts as {prompt, response} (+ provenance) for supervised fine-tuning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmopt.fsutil import atomic_write_json, atomic_write_jsonl, read_json, read_jsonl


def export(session: Any, out: Path | None = None) -> dict[str, Any]:
    """Write the files above; returns counts (also stored under "export" in review/summary.json)."""
    out = Path(out) if out is not None else session.dir / "export"
    latest = session.store.latest()
    items = {it.id: it for it in session.items}
    decided = [(items[i], d) for i, d in latest.items() if i in items]
    decided.sort(key=lambda x: x[1]["seq"])

    reviewed, sft = [], []
    for it, d in decided:
        text, label = it.text, it.given_label
        if d["action"] == "relabel":
            label = d["label"]
        elif d["action"] == "edit":
            text, label = d["text"], d["label"] or label
        prov = {"item": it.id, "kind": it.kind, "stage": it.stage, "source": it.source, "row": it.row,
                "split": it.split, "action": d["action"], "reviewer": d["reviewer"], "at": d["at"],
                "label_before": it.given_label, "model_label": it.model_label}
        if d["action"] != "reject":
            reviewed.append({"text": text, "label": label, "provenance": prov})
        if it.kind == "draft" and d["action"] == "edit":
            sft.append({"prompt": it.prompt or "", "response": text, "provenance": {**prov, "draft": it.text}})
    counts: dict[str, Any] = {"out": str(out), "reviewed_rows": len(reviewed), "sft_rows": len(sft)}

    s = session.run.train_stage
    if s is not None:
        touched = {it.row: (it, d) for it, d in decided if it.stage == s.id and it.split == "train"}
        rows, changed, dropped = [], 0, 0
        for i, r in enumerate(read_jsonl(s.artifacts / "train.jsonl")):
            prov: dict[str, Any] = {"stage": s.id, "row": i}
            text, label = str(r["text"]), str(r["label"])
            if i in touched:
                it, d = touched[i]
                prov.update(item=it.id, action=d["action"], reviewer=d["reviewer"], at=d["at"])
                if d["action"] == "reject":
                    dropped += 1
                    continue
                if d["action"] == "relabel" and d["label"] != label:
                    prov["label_before"], label = label, d["label"]
                    changed += 1
                elif d["action"] == "edit":
                    if d["text"] != text:
                        prov["text_before"], text = text, d["text"]
                    if d["label"] and d["label"] != label:
                        prov["label_before"], label = label, d["label"]
                    changed += 1
            rows.append({"text": text, "label": label, "provenance": prov})
        atomic_write_jsonl(out / "train.jsonl", rows)
        for split in ("dev", "test"):
            src = s.artifacts / f"{split}.jsonl"
            if src.is_file():
                atomic_write_jsonl(out / f"{split}.jsonl",
                                   ({"text": r["text"], "label": r["label"],
                                     "provenance": {"stage": s.id, "row": i, "split": split}}
                                    for i, r in enumerate(read_jsonl(src))))
        atomic_write_json(out / "labels.json", read_json(s.artifacts / "labels.json"))
        counts.update(train_stage=s.id, train_rows=len(rows), train_changed=changed, train_dropped=dropped)
    atomic_write_jsonl(out / "reviewed.jsonl", reviewed)
    atomic_write_jsonl(out / "sft.jsonl", sft)
    summary = session.write_summary()
    summary["export"] = counts
    atomic_write_json(session.dir / "summary.json", summary)
    return counts
