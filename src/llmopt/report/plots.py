"""Plots as SVG text (matplotlib, Agg); text is drawn as paths so nothing from data becomes markup."""

from __future__ import annotations

import io
import itertools
from typing import Any


_figure_no = itertools.count()


def _fig_svg(fig: Any) -> str:
    import matplotlib
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    # several SVGs share one HTML page: a salt per figure keeps their element ids apart, and
    # a counter (not randomness) keeps the files identical from one build to the next
    with matplotlib.rc_context({"svg.hashsalt": f"llmopt-fig-{next(_figure_no)}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog so it can be inlined


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    import matplotlib.pyplot as plt

    return plt


OFF_SCALE_MS = 0.05  # faster than this (the majority baseline, ~0.001 ms) is drawn at the plot's left edge


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats on both (lower x, higher y), ordered by x."""
    front = [n for n, (x, y) in points.items()
             if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2 in points.values())]
    return sorted(front, key=lambda n: points[n])


def _place_labels(ax: Any, items: list[tuple[str, float, float]], fontsize: float = 8) -> None:
    """Annotate each (label, x, y), trying offsets around the point until the label overlaps no earlier one."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    offsets = [(7, 5, "left"), (7, -11, "left"), (-7, 5, "right"), (-7, -11, "right"), (7, 16, "left"),
               (-7, 16, "right"), (7, -22, "left"), (-7, -22, "right"), (0, 26, "center"), (0, -32, "center")]
    placed: list[Any] = []
    axbox = ax.get_window_extent(renderer)
    for label, x, y in sorted(items, key=lambda t: -t[2]):
        best = None
        for dx, dy, ha in offsets:
            t = ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize, ha=ha)
            box = t.get_window_extent(renderer)
            clash = sum(box.overlaps(p) for p in placed) + (0 if axbox.contains(box.x0, box.y0)
                                                            and axbox.contains(box.x1, box.y1) else 1)
            if best is None or clash < best[0]:
                if best is not None:
                    best[1].remove()
                best = (clash, t, box)
            else:
                t.remove()
            if clash == 0:
                break
        placed.append(best[2])


def accuracy_vs_latency(models: dict[str, dict], highlight: str | None = None) -> str:
    """Test accuracy (95% CI) against batch-1 latency; marker area ∝ size on disk; the Pareto front as a line.

    Entries faster than OFF_SCALE_MS are drawn at the left edge (with their latency in the label) so that one
    microsecond baseline does not stretch the log axis over three decades of empty space."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    sizes = {n: (m.get("weights_bytes") or m.get("size_bytes") or 0) for n, m in models.items()}
    top = max(sizes.values()) or 1
    on = {n: m for n, m in models.items() if m["latency_b1_p50_ms"] >= OFF_SCALE_MS}
    off = {n: m for n, m in models.items() if n not in on}
    xs = [m["latency_b1_p50_ms"] for m in on.values()] or [1.0]
    edge = min(xs) / 2.5
    pts = {n: (m["latency_b1_p50_ms"], 100 * m["accuracy"]) for n, m in on.items()}
    front = pareto_front(pts)
    if len(front) > 1:
        fx, fy = zip(*(pts[n] for n in front))
        ax.step(fx, fy, where="post", color="tab:orange", lw=1.2, alpha=0.8, zorder=1, label="Pareto front")
    labels = []
    for name, m in models.items():
        x = m["latency_b1_p50_ms"] if name in on else edge
        acc = 100 * m["accuracy"]
        lo, hi = (100 * v for v in m["accuracy_ci"])
        color = "tab:blue" if m["kind"] == "model" else "tab:gray"
        ax.errorbar([x], [acc], yerr=[[max(acc - lo, 0)], [max(hi - acc, 0)]], fmt="none", ecolor=color,
                    alpha=0.6, capsize=3, zorder=2)
        ax.scatter([x], [acc], s=25 + 500 * sizes[name] / top, color=color, alpha=0.55,
                   marker="<" if name in off else "o", zorder=3,
                   edgecolors="black" if name == highlight else "none", linewidths=1.5)
        label = name + (" (recommended)" if name == highlight else "")
        labels.append((label + (f" ({m['latency_b1_p50_ms']:.3f} ms, off scale)" if name in off else ""), x, acc))
    ax.set_xscale("log")
    ax.set_xlim(edge / 1.6, max(xs) * 2.2)
    accs = [100 * m["accuracy"] for m in models.values()]
    lows = [100 * m["accuracy_ci"][0] for m in models.values()]
    highs = [100 * m["accuracy_ci"][1] for m in models.values()]
    pad = max(2.0, 0.08 * (max(highs) - min(lows)))
    ax.set_ylim(min(lows + accs) - pad, max(highs + accs) + pad)
    if off:
        ax.axvline(edge * 1.35, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("batch-1 latency p50 (ms, log scale)")
    ax.set_ylabel("test accuracy (%) with 95% CI")
    ax.set_title("Accuracy vs latency (marker area ∝ size on disk; blue: models, gray: baselines)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.canvas.draw()
    _place_labels(ax, labels)
    if len(front) > 1:
        ax.legend(loc="lower right", fontsize=8)
    return _fig_svg(fig)


def sizes(models: dict[str, dict]) -> str:
    """Weights on disk per entry (baselines: their saved file), labelled inside the frame."""
    plt = _plt()
    names = [n for n, m in models.items() if m.get("weights_bytes") or m.get("size_bytes")]
    vals = [(models[n].get("weights_bytes") or models[n]["size_bytes"]) / 2**20 for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 0.7 + 0.45 * max(1, len(names))))
    ax.barh(names, vals, color=["#4c72b0" if models[n]["kind"] == "model" else "#999999" for n in names])
    top = max(vals, default=1) or 1
    for i, v in enumerate(vals):
        text = f"{v:.1f} MB" if v >= 1 else f"{v * 1024:.1f} KB" if v * 1024 >= 1 else f"{v * 2**20:.0f} B"
        ax.text(v + top * 0.01, i, text, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.22)  # room for the largest bar's label inside the frame
    ax.set_xlabel("weights on disk (MB)")
    ax.set_title("Size on disk", fontsize=10)
    ax.invert_yaxis()
    return _fig_svg(fig)


def training_curve(history: list[dict]) -> str:
    """Train and dev loss (left axis) and dev macro-F1 (right axis) by step; the legend sits below the plot."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    ev = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    handles = []
    if train:
        handles += ax.plot(*zip(*train), label="train loss", lw=1)
    if ev:
        handles += ax.plot(*zip(*ev), "o-", label="dev loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    f1 = [(h["step"], 100 * h["eval_macro_f1"]) for h in history if "eval_macro_f1" in h]
    if f1:
        ax2 = ax.twinx()
        handles += ax2.plot(*zip(*f1), "s--", color="tab:green", label="dev macro-F1 (%)")
        ax2.set_ylabel("dev macro-F1 (%)")
        # at least 5 points of span, so a 0.5-point wobble does not fill the whole height
        lo, hi = min(v for _, v in f1), max(v for _, v in f1)
        mid, half = (lo + hi) / 2, max(2.5, 0.6 * (hi - lo))
        ax2.set_ylim(max(0.0, mid - half), min(100.0, mid + half))
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(handles), fontsize=8,
                  frameon=False)
    ax.set_title("Training curve")
    ax.grid(alpha=0.3)
    return _fig_svg(fig)


def confusion_matrix(cm: list[list[int]], labels: list[str], title: str) -> str:
    plt = _plt()
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * k, 1.0 + 0.6 * k))
    ax.pcolormesh(cm, cmap="Blues")  # vector cells, no embedded bitmap
    ax.set_ylim(k, 0)
    top = max(max(r) for r in cm) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j + 0.5, i + 0.5, str(cm[i][j]), ha="center", va="center",
                    color="white" if cm[i][j] > top / 2 else "black")
    ax.set_xticks([t + 0.5 for t in range(k)], labels, rotation=45, ha="right")
    ax.set_yticks([t + 0.5 for t in range(k)], labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _fig_svg(fig)


def search_pareto(cands: dict[str, dict], teacher: dict, frontier: list[str], chosen: str | None,
                  min_acc: float) -> str:
    """Dev accuracy against batch-1 latency for every search candidate; marker area ∝ size on disk; the
    Pareto frontier as a line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    top = max([c["size_bytes"] for c in cands.values()] + [teacher["size_bytes"]]) or 1
    front = sorted((c["latency_b1_p50_ms"], 100 * c["accuracy"]) for n, c in cands.items() if n in frontier)
    if len(front) > 1:
        ax.step(*zip(*front), where="post", color="tab:blue", lw=1, alpha=0.6, label="Pareto frontier")
    labels = []
    for name, c in cands.items():
        on = name in frontier
        ax.scatter([c["latency_b1_p50_ms"]], [100 * c["accuracy"]], s=20 + 400 * c["size_bytes"] / top,
                   alpha=0.8 if on else 0.35, color="tab:blue" if on else "tab:gray",
                   edgecolors="black" if name == chosen else "none", linewidths=2)
        labels.append((name + (" (chosen)" if name == chosen else ""), c["latency_b1_p50_ms"], 100 * c["accuracy"]))
    ax.scatter([teacher["latency_b1_p50_ms"]], [100 * teacher["accuracy"]], marker="*", s=160, color="tab:red")
    labels.append(("teacher", teacher["latency_b1_p50_ms"], 100 * teacher["accuracy"]))
    ax.axhline(100 * min_acc, ls="--", color="tab:red", lw=1, label="tolerance")
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency p50 (ms, log scale)")
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title("Search candidates (blue: Pareto frontier; area ∝ size)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.canvas.draw()
    _place_labels(ax, labels, fontsize=7)
    return _fig_svg(fig)


def decode_vs_perplexity(models: dict[str, dict]) -> str:
    """Causal LMs: decode tokens/s (batch 1) against perplexity with its 95% CI; marker area ∝ size on disk;
    colour by runtime family (llama.cpp, transformers, dequantized GGUF)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    pts = {n: m for n, m in models.items() if m.get("decode_tok_s") and m.get("ppl")}
    top = max((m.get("size_bytes") or 0 for m in pts.values()), default=1) or 1
    labels = []
    for name, m in pts.items():
        rt = str(m.get("runtime", ""))
        color = "tab:green" if rt.startswith("llama.cpp") else "tab:gray" if "dequantized" in rt else "tab:blue"
        x, y = m["decode_tok_s"], m["ppl"]
        lo, hi = m.get("ppl_ci") or (y, y)
        ax.errorbar([x], [y], yerr=[[max(y - lo, 0)], [max(hi - y, 0)]], fmt="none", ecolor=color, alpha=0.6,
                    capsize=3, zorder=2)
        ax.scatter([x], [y], s=25 + 500 * (m.get("size_bytes") or 0) / top, color=color, alpha=0.55, zorder=3)
        labels.append((name, x, y))
    if pts:
        xs = [m["decode_tok_s"] for m in pts.values()]
        ax.set_xlim(min(xs) / 1.5, max(xs) * 1.8)
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 20, 50, 100 — not 2×10¹
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.set_xlabel("decode tokens/s at batch 1 (log scale; right is faster)")
    ax.set_ylabel("perplexity with 95% CI (lower is better)")
    ax.set_title("Speed vs perplexity (marker area ∝ size on disk; green: llama.cpp, blue: transformers, "
                 "gray: dequantized GGUF)", fontsize=8)
    ax.grid(alpha=0.3)
    fig.canvas.draw()
    _place_labels(ax, labels)
    return _fig_svg(fig)
