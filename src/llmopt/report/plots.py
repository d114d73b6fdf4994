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


def accuracy_vs_latency(models: dict[str, dict]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, m in models.items():
        x, acc = max(m["latency_b1_p50_ms"], 1e-3), m["accuracy"] * 100
        lo, hi = (v * 100 for v in m["accuracy_ci"])
        ax.errorbar([x], [acc], yerr=[[acc - lo], [hi - acc]], fmt="o" if m["kind"] == "model" else "s", capsize=3)
        ax.annotate(name, (x, acc), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency p50 (ms, log scale)")
    ax.set_ylabel("accuracy (%) with 95% CI")
    ax.set_title("Accuracy vs latency")
    ax.grid(alpha=0.3)
    return _fig_svg(fig)


def sizes(models: dict[str, dict]) -> str:
    plt = _plt()
    names = [n for n, m in models.items() if m.get("size_bytes")]
    vals = [models[n]["size_bytes"] / 2**20 for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.45 * max(1, len(names))))
    ax.barh(names, vals, color="#4c72b0")
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.2f} MB", va="center", fontsize=8)
    ax.set_xlabel("size on disk (MB)")
    ax.set_title("Size on disk")
    ax.invert_yaxis()
    return _fig_svg(fig)


def training_curve(history: list[dict]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    ev = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if ev:
        ax.plot(*zip(*ev), "o-", label="dev loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    f1 = [(h["step"], h["eval_macro_f1"]) for h in history if "eval_macro_f1" in h]
    if f1:
        ax2 = ax.twinx()
        ax2.plot(*zip(*f1), "s--", color="tab:green", label="dev macro-F1")
        ax2.set_ylabel("dev macro-F1")
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
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
    """Dev accuracy against batch-1 latency for every search candidate; marker area ∝ size on disk."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    top = max([c["size_bytes"] for c in cands.values()] + [teacher["size_bytes"]]) or 1
    for name, c in cands.items():
        on = name in frontier
        ax.scatter([c["latency_b1_p50_ms"]], [100 * c["accuracy"]], s=20 + 300 * c["size_bytes"] / top,
                   alpha=0.8 if on else 0.35, color="tab:blue" if on else "tab:gray",
                   edgecolors="black" if name == chosen else "none", linewidths=2)
        ax.annotate(name + (" (chosen)" if name == chosen else ""), (c["latency_b1_p50_ms"], 100 * c["accuracy"]),
                    textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.scatter([teacher["latency_b1_p50_ms"]], [100 * teacher["accuracy"]], marker="*", s=160, color="tab:red")
    ax.annotate("teacher", (teacher["latency_b1_p50_ms"], 100 * teacher["accuracy"]), textcoords="offset points",
                xytext=(5, 3), fontsize=8)
    ax.axhline(100 * min_acc, ls="--", color="tab:red", lw=1, label="tolerance")
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency p50 (ms, log scale)")
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title("Search candidates (blue: Pareto frontier; area ∝ size)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _fig_svg(fig)
