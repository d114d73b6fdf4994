"""The report's "Human review" section, from run_dir/review/summary.json."""

from __future__ import annotations

from typing import Any


def section(s: dict[str, Any], doc: Any) -> None:
    """Items reviewed per kind and what the decisions changed; the last export, if any."""
    doc.h(2, "Human review")
    who = ", ".join(s.get("reviewers") or []) or "nobody yet"
    doc.p(f"{s['reviewed']} of {s['items']} review items decided ({s['decisions']} decisions in total, by {who}; "
          f"last {s.get('updated')}): {s['labels_changed']} labels changed, {s['texts_edited']} texts edited, "
          f"{s['rejected']} rejected.")
    acts = s.get("by_action") or {}
    doc.table(["kind", "items", "reviewed"],
              [[k.replace("_", " "), str(v["items"]), str(v["reviewed"])] for k, v in s["by_kind"].items()])
    if acts:
        doc.table(["decision", "items"], [[a, str(n)] for a, n in acts.items()])
    e = s.get("export")
    if e:
        line = f"Exported to {e['out']}: {e['reviewed_rows']} reviewed rows, {e['sft_rows']} edited drafts for SFT"
        if "train_rows" in e:
            line += (f"; train split of stage '{e['train_stage']}' with the decisions applied: {e['train_rows']} "
                     f"rows ({e['train_changed']} changed, {e['train_dropped']} dropped)")
        doc.p(line + ".")
