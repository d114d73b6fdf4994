"""Report rendering: narrow tables, plots that build with and without baselines and gates, short paths."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from llmopt.report import plots
from llmopt.report.render import Doc, build_report, short_path
from llmopt.stages import STAGES
from tests.report.test_answer import entry, gate, metrics

MAX_COLUMNS = 8  # a 900 px page holds about this many columns of numbers with intervals


class _Tables(HTMLParser):
    """Column count of every table's header row."""

    def __init__(self) -> None:
        super().__init__()
        self.widths: list[int] = []
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "thead":
            self._in_head = True
            self.widths.append(0)
        elif tag == "th" and self._in_head:
            self.widths[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_head = False


def table_widths(html: str) -> list[int]:
    p = _Tables()
    p.feed(html)
    return p.widths


def full_metrics() -> dict:
    """Every kind of entry: baselines, the teacher, its int8 export, gated students (one flagged)."""
    return metrics({
        "majority": entry(0.50, 0.001, 35, kind="baseline", p=0.001, per_class={}),
        "tfidf": entry(0.70, 0.5, 10_000, kind="baseline", p=0.001),
        "teacher": entry(0.80, 10.0, 80_000_000, path="/runs/x/stages/01-teacher/artifacts/model"),
        "teacher-ort-int8": entry(0.80, 4.0, 20_000_000, kind="baseline", p=1.0, runtime="onnxruntime-dynamic_int8"),
        "student": entry(0.795, 4.0, 40_000_000, gate=gate("teacher", ratio=0.4), p=0.4, path="/runs/student"),
        "pruned": entry(0.79, 3.9, 30_000_000, gate=gate("student", passed=False, ratio=0.98), p=0.3),
        "quant": entry(0.790, 2.0, 10_000_000, gate=gate("pruned"), p=0.2, path="/runs/quant",
                       runtime="onnxruntime-dynamic_int8", gate_vs_ort_int8=gate("teacher-ort-int8")),
    }, ort_int8_baseline="teacher-ort-int8")


def _with_per_class(ev: dict) -> dict:
    for e in ev["models"].values():
        e["per_class"] = {lab: {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 500} for lab in ev["labels"]}
        e["confusion_matrix"] = [[400, 100], [100, 400]]
    return ev


def test_evaluate_section_tables_fit_and_say_their_units():
    ev = _with_per_class(full_metrics())
    doc = Doc()
    STAGES["evaluate"].section("evaluate", ev, doc)
    html = doc.html("t")
    widths = table_widths(html)
    assert widths and max(widths) <= MAX_COLUMNS
    md = doc.markdown()
    assert "Δ accuracy vs teacher, points [95% CI]" in md
    assert "| -1.0 [-3.0, +1.0] | p=0.200 |" in md  # quant: 79.0 − 80.0 points, with its interval and p
    assert "peak RSS" not in md and "1.1 GB" not in md
    assert 'class="tbl"' in html and "overflow-x:auto" in html


@pytest.mark.parametrize("names", [
    ["teacher"],  # no baselines, no gates
    ["majority", "teacher"],  # only an off-scale baseline beside the model
    ["majority", "tfidf", "teacher", "teacher-ort-int8", "student", "pruned", "quant"],
])
def test_plots_build_with_and_without_baselines_and_gates(names):
    ev = full_metrics()
    models = {n: ev["models"][n] for n in names}
    for svg in (plots.accuracy_vs_latency(models, highlight=names[-1]), plots.sizes(models)):
        assert svg.startswith("<svg")
        ET.fromstring(svg)  # well-formed
    hist = [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.5, "eval_loss": 0.6, "eval_macro_f1": 0.7}]
    for h in (hist, hist[:1], []):
        ET.fromstring(plots.training_curve(h))


def test_pareto_front_by_hand():
    pts = {"a": (1.0, 80.0), "b": (2.0, 85.0), "c": (3.0, 84.0), "d": (0.5, 70.0), "e": (2.0, 80.0)}
    assert plots.pareto_front(pts) == ["d", "a", "b"]


def test_off_scale_baseline_does_not_stretch_the_axis():
    """The majority baseline's ~0.001 ms is drawn at the left edge: the axis starts within a decade of the
    fastest real entry instead of three decades lower."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = full_metrics()
    shown = []
    orig = plots._fig_svg

    def keep(fig):
        shown.append(fig.axes[0].get_xlim())
        return orig(fig)

    plots._fig_svg, before = keep, plt.get_fignums()
    try:
        plots.accuracy_vs_latency(ev["models"])
    finally:
        plots._fig_svg = orig
    lo, _ = shown[0]
    assert 0.5 / 10 < lo < 0.5  # tfidf at 0.5 ms is the fastest on-scale entry
    assert plt.get_fignums() == before


def test_short_path(minilm_path):
    assert short_path(minilm_path) == "builtin:minilm"
    assert short_path("/x/.venv/lib/python3.11/site-packages/somepkg/model") == "…/site-packages/somepkg/model"
    assert short_path("/runs/a/stages/01-f/artifacts/model", Path("/runs/a")) == "stages/01-f/artifacts/model"
    assert short_path("/data/model") == "/data/model"


def _write_stage(run_dir: Path, i: int, sid: str, stype: str, m: dict) -> None:
    d = run_dir / "stages" / f"{i:02d}-{sid}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"id": sid, "type": stype}))
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "DONE").write_text("{}")


def test_report_opens_with_the_answer_and_no_wide_table(tmp_path, minilm_path):
    run = tmp_path / "runs" / "r" / "20260101-000000-abcdef"
    _write_stage(run, 0, "data", "data", {"source": "x", "labels": ["neg", "pos"], "rows": {"train": 8, "dev": 2, "test": 2},
                                        "label_counts": {s: {"neg": 1, "pos": 1} for s in ("train", "dev", "test")}})
    # older metrics: the base model as a path inside site-packages
    _write_stage(run, 1, "teacher", "finetune", {"base_model": str(minilm_path), "n_train": 8, "n_dev": 2,
                                                 "dev_accuracy": 0.8, "dev_macro_f1": 0.8})
    _write_stage(run, 2, "evaluate", "evaluate", _with_per_class(full_metrics()))
    build_report(run)
    md = (run / "report" / "report.md").read_text()
    heads = [line for line in md.splitlines() if line.startswith("#")]
    assert heads[:2] == ["# llmopt report — r", "## The answer: use quant"]
    assert md.index("## The answer") < md.index("## Data (data)") < md.index("## Evaluation (evaluate)")
    assert "Base model: builtin:minilm." in md and "site-packages" not in md
    html = (run / "report" / "report.html").read_text()
    assert max(table_widths(html)) <= MAX_COLUMNS


def _search_metrics(chosen: str | None = "L2-ffn50-trim-dynamic_int8") -> dict:
    cands = {}
    for i, (layers, ffn) in enumerate([(2, 1.0), (2, 0.5), (3, 0.5)]):
        name = f"L{layers}-ffn{int(100 * ffn)}-trim-dynamic_int8"
        acc = 0.78 + 0.01 * i
        cands[name] = {"accuracy": acc, "accuracy_ci": [acc - 0.03, acc + 0.03], "macro_f1": acc,
                       "latency_b1_p50_ms": 1.0 + 0.5 * i - (0.6 if ffn < 1 and layers == 2 else 0),
                       "size_bytes": 5_000_000 * layers * (1 + ffn), "params": 1_000_000 * layers,
                       "gate": gate("teacher", passed=i != 2, ratio=0.3), "within_tolerance": i > 0,
                       "layers": layers, "ffn_keep": ffn, "vocab_trim": True, "scheme": "dynamic_int8"}
    return {"parent": "teacher", "teacher_dev": {"accuracy": 0.80, "accuracy_ci": [0.77, 0.83],
                                                 "latency_b1_p50_ms": 6.0, "size_bytes": 90_000_000},
            "min_dev_accuracy": 0.792, "max_drop": 0.01, "drop": "relative", "objective": "latency",
            "candidates": cands, "pareto": ["L2-ffn50-trim-dynamic_int8", "L3-ffn50-trim-dynamic_int8"],
            "chosen": chosen, "choice": "fastest within tolerance that passed the gate" if chosen else "none passed",
            "skipped_for_time": []}


def test_search_section_tables_fit_and_the_plot_builds():
    doc = Doc()
    STAGES["search"].section("search", _search_metrics(), doc)
    assert max(table_widths(doc.html("t"))) <= MAX_COLUMNS
    assert list(doc.figures) == ["search-pareto.svg"]
    ET.fromstring(doc.figures["search-pareto.svg"])
    assert "| chosen |" in doc.markdown()
