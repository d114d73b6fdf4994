"""Build report.md and a self-contained report.html from a run directory's metrics files."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from llmopt.fsutil import atomic_write_text, read_json


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _gate(g: dict | None) -> str:
    """A compressed model against its parent, timed in the same run: passed, or flagged and on what."""
    if not g:
        return ""
    ci = g.get("ratio_ci")
    speed = f"{_num(g.get('speedup_b1'), '{:.2f}')}×"
    speed = f"{speed} faster" if g.get("verdict", "faster") == "faster" else f"{g.get('verdict')} ({speed})"
    if ci and ci[0] > 0:
        speed += f" [{1 / ci[1]:.2f}, {1 / ci[0]:.2f}]"
    size = _num(g.get("size_ratio"), "{:.1f}× smaller") if g.get("smaller", True) else "not smaller"
    return f"{'passed' if g['passed'] else 'FLAGGED'} vs {g['parent']}: {speed}, {size}"


def _bytes(b: float | None) -> str:
    if b is None:
        return "—"
    if b >= 2**20:
        return f"{b / 2**20:.1f} MB"
    return f"{b / 1024:.1f} KB" if b >= 1024 else f"{b:.0f} B"


def short_path(path: str | Path, run_dir: Path | None = None) -> str:
    """A path as a reader wants it: `builtin:minilm` for the bundled model, `…/site-packages/<rest>` for other
    installed files, relative to the run directory when inside it; otherwise unchanged."""
    p = Path(path)
    if run_dir is not None:
        try:
            return p.relative_to(run_dir).as_posix()
        except ValueError:
            pass
    if "site-packages" in p.parts:
        try:
            from llmopt.models import display_path

            shown = display_path(p)
            if shown != str(p):
                return shown
        except Exception:  # noqa: BLE001 — a report must build even where the package is gone
            pass
        return "…/site-packages/" + "/".join(p.parts[p.parts.index("site-packages") + 1:])
    return str(p)


def _ms(v: float | None) -> str:
    return "<0.01" if v is not None and v < 0.01 else _num(v)


def _p(p: float, resamples: int) -> str:
    # a bootstrap cannot resolve p below 1/resamples
    return f"p<{1 / resamples:g}" if p < 1 / resamples else f"p={p:.3f}"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def results_tables(ev: dict[str, Any], doc: "Doc") -> None:
    """Every model and baseline of an evaluate stage in two narrow tables: quality, then speed and size."""
    ref = ev["reference"]
    rows = []
    for name, m in ev["models"].items():
        vs = m.get("vs_reference")
        if vs is None:
            delta, p = "reference", ""
        else:
            d = vs["accuracy"]
            delta = f"{100 * d['diff']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]"
            p = _p(d["p_value"], vs["resamples"])
        rows.append([name, f"{m['kind']}, {m['runtime']}", _pct(m["accuracy"]) + _ci(m["accuracy_ci"]),
                     _pct(m["macro_f1"]) + _ci(m["macro_f1_ci"]), delta, p])
    doc.table(["model", "kind, runtime", "accuracy % [95% CI]", "macro-F1 % [95% CI]",
               f"Δ accuracy vs {ref}, points [95% CI]", "paired p"], rows)
    rows = [[name, _ms(m["latency_b1_p50_ms"]), _ms(m["latency_b1_p95_ms"]),
             _num(m.get("throughput_b32"), "{:,.0f}"), f"{m['params']:,}",
             _bytes(m.get("weights_bytes") or m.get("size_bytes")), _gate(m.get("gate"))]
            for name, m in ev["models"].items()]
    doc.table(["model", "batch-1 p50 ms", "batch-1 p95 ms", "throughput /s (batch 32)", "parameters",
               "weights on disk", "gate vs parent: speed-up [95% CI], size"], rows)


def training_section(sid: str, m: dict, doc: "Doc") -> None:
    """What every training stage reports: steps, time, resume, how much of each text max_length kept, the curve."""
    from llmopt.report import plots

    if m.get("global_steps") is None:
        return
    cov = m.get("train_coverage") or {}
    resumed = (f" Resumed from the checkpoint at step {m['resumed_at_step']}; {m['steps_trained_now']} steps trained "
               "after the interruption." if m.get("resumed_at_step") else "")
    doc.p(f"Training: {m['global_steps']} steps over {_num(m.get('epochs_run'), '{:.2f}')} epochs "
          f"({_num(m.get('train_runtime_s'), '{:.0f}')} s, {_num(m.get('train_samples_per_second'), '{:.1f}')} "
          f"samples/s), max_length {m.get('max_length')} ({m.get('truncation', 'right')} truncation)." + resumed)
    if cov.get("rows"):
        text = (f"max_length {cov['max_length']} keeps {_pct(cov['mean_share_tokens_kept'])}% of the average train "
                f"text's tokens; {_pct(cov['share_rows_cut'])}% of train texts are cut (median length "
                f"{cov['length_p50']:.0f} tokens, 95th percentile {cov['length_p95']:.0f}).")
        if cov["share_rows_cut"] > 0.5:
            text = ("Warning: most train texts are cut. " + text + " Raise max_length, use max_length: auto, or "
                    "truncation: head_tail.")
        doc.p(text)
    if m.get("history"):
        name = f"{sid}-training-curve.svg"
        doc.figure(name, plots.training_curve(m["history"]), f"Training loss, dev loss and dev macro-F1 ({sid})")


class Doc:
    """Collects sections once and renders them both as Markdown and as HTML (all text escaped)."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, Any]] = []
        self.figures: dict[str, str] = {}  # file name → SVG text, written beside the report

    def h(self, level: int, text: str) -> None:
        self.parts.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.parts.append(("p", text))

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        self.parts.append(("table", (head, rows)))

    def figure(self, name: str, svg: str, caption: str) -> None:
        self.figures[name] = svg
        self.parts.append(("fig", (name, svg, caption)))

    def markdown(self) -> str:
        out = []
        for kind, v in self.parts:
            if kind == "h":
                out.append("#" * v[0] + " " + v[1])
            elif kind == "p":
                out.append(v)
            elif kind == "table":
                head, rows = v
                esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
                out.append("| " + " | ".join(map(esc, head)) + " |")
                out.append("|" + "---|" * len(head))
                out.extend("| " + " | ".join(map(esc, r)) + " |" for r in rows)
            elif kind == "fig":
                out.append(f"![{v[2]}]({v[0]})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        e = html.escape
        body = []
        for kind, v in self.parts:
            if kind == "h":
                body.append(f"<h{v[0]}>{e(v[1])}</h{v[0]}>")
            elif kind == "p":
                body.append(f"<p>{e(v)}</p>")
            elif kind == "table":
                head, rows = v
                th = "".join(f"<th>{e(str(c))}</th>" for c in head)
                trs = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<div class=\"tbl\"><table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>")
            elif kind == "fig":
                body.append(f"<figure>{v[1]}<figcaption>{e(v[2])}</figcaption></figure>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            # a wide table scrolls inside its own box instead of pushing the page wider than the window
            ".tbl{max-width:100%;overflow-x:auto;margin:1em 0}"
            "table{border-collapse:collapse;font-size:13px}"
            "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}"
            "th{background:#f3f3f3}"
            "figure{margin:1em 0}figure svg{max-width:100%;height:auto}figcaption{font-size:12px;color:#555}"
        )
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>{e(title)}</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )


def build_report(run_dir: Path) -> dict[str, Any]:
    """Write report.md, report.html and the plot SVGs into run_dir/report from the finished stages' metrics."""
    from llmopt.rundir import stage_metrics
    from llmopt.stages import STAGES

    run_dir = Path(run_dir)
    stages = stage_metrics(run_dir)
    out_dir = run_dir / "report"
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    doc = Doc()
    doc.h(1, f"llmopt report — {run_dir.parent.name}")
    evals = [(sid, m) for sid, stype, m in stages if stype == "evaluate" and m.get("models")]
    if evals:  # the answer first: from the last evaluate stage
        from llmopt.report import answer

        sid, ev = evals[-1]
        answer.section(ev, doc, files=_baseline_files(run_dir, sid, ev))
    else:
        doc.p("No evaluate stage has finished in this run, so there is no recommendation yet.")
    doc.p(f"Run directory: {run_dir}. Every figure below is read from the stages' metrics.json files.")
    for sid, stype, m in stages:
        STAGES[stype].section(sid, m, doc)
    if (run_dir / "review" / "summary.json").is_file():  # written by `llmopt review` as decisions are made
        from llmopt.review.report import section as review_section

        review_section(read_json(run_dir / "review" / "summary.json"), doc)

    doc.h(2, "Provenance")
    rows = [["created", str(manifest.get("created"))], ["git sha", str(manifest.get("git_sha"))],
            ["seed", str(manifest.get("seed"))], ["python", str(manifest.get("python"))],
            ["platform", str(manifest.get("platform"))]]
    rows += [[f"package {k}", str(v)] for k, v in (manifest.get("packages") or {}).items() if v]
    rows += [[f"data {k}", f"sha256 {v['sha256']}"] for k, v in (manifest.get("data_files") or {}).items()]
    rows += [[f"stage {sid}", f"{stype}, {m.get('stage_seconds', 0):.1f} s"] for sid, stype, m in stages]
    doc.table(["what", "value"], rows)

    out_dir = Path(out_dir)
    from llmopt import faults

    faults.point("report.write")
    for name, svg in doc.figures.items():
        atomic_write_text(out_dir / name, svg)
    atomic_write_text(out_dir / "report.md", doc.markdown())
    atomic_write_text(out_dir / "report.html", doc.html(f"llmopt report — {run_dir.parent.name}"))
    return {"markdown": str(out_dir / "report.md"), "html": str(out_dir / "report.html"),
            "figures": sorted(doc.figures)}


def _baseline_files(run_dir: Path, sid: str, ev: dict) -> dict[str, str]:
    """Where the evaluate stage saved each baseline (models carry their own `path`)."""
    found = sorted((run_dir / "stages").glob(f"*-{sid}"))
    if not found:
        return {}
    folder = found[-1] / "artifacts" / "baselines"
    return {n: str(folder / f"{n}.json") for n, m in ev["models"].items()
            if m.get("kind") == "baseline" and (folder / f"{n}.json").is_file()}


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in s)
