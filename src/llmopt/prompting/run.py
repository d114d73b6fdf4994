"""Run prompt settings (a variant × k × strategy) over rows with repeated seeded example draws, and the statistics:
accuracy and macro-F1 averaged over the repeats with 95% bootstrap intervals over rows, and a paired bootstrap of
one setting against another on the same rows (eval/metrics.py's resampling, with each row's correctness averaged
over the repeats)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmopt.prompting.fewshot import PER_QUERY, ExamplePool, select
from llmopt.prompting.templates import PromptTemplate


@dataclass(frozen=True)
class Setting:
    """One cell of the grid: a template variant, k examples, a selection strategy."""

    variant: PromptTemplate
    k: int
    strategy: str

    @property
    def name(self) -> str:
        return f"{self.variant.name} zero-shot" if self.k == 0 else f"{self.variant.name} {self.k}-shot {self.strategy}"


def repeat_seed(seed: int, repeat: int) -> int:
    """Repeat r draws with the same seed in every setting, so settings are compared on the same draws."""
    return seed + 7919 * repeat


def predict(backend: Any, template: PromptTemplate, rows: list[dict], labels: list[str], method: str,
            examples_for: Any, max_new_tokens: int = 8) -> dict[str, Any]:
    """One pass over the rows: predicted label index per row (len(labels) = unparseable), answers, token counts.

    `examples_for(i, row)` gives the few-shot rows for row i."""
    from llmopt.data.sft import parse_label

    words = [template.label_words[lab] for lab in labels]
    chats = [template.messages(r, examples_for(i, r), where=f"row {i}") for i, r in enumerate(rows)]

    def one(chat: list[dict]) -> dict[str, Any]:
        if method == "loglik":
            return backend.score_labels(chat, words)
        return backend.generate(chat, max_new_tokens)

    t0 = time.perf_counter()
    if backend.concurrency > 1:
        with ThreadPoolExecutor(backend.concurrency) as pool:
            outs = list(pool.map(one, chats))
    else:
        outs = [one(c) for c in chats]
    seconds = time.perf_counter() - t0
    preds, answers = [], []
    for o in outs:
        if method == "loglik":
            preds.append(int(np.argmax(o["logprobs"])))
        else:
            lab = parse_label(o["text"], dict(zip(labels, words)))
            preds.append(labels.index(lab) if lab is not None else len(labels))
            answers.append(o["text"])
    fresh = [o for o in outs if not o.get("cached")]
    tokens = sum(o.get("prompt_tokens") or 0 for o in fresh)
    return {"preds": preds, "answers": answers, "unparseable": sum(p == len(labels) for p in preds),
            "calls": len(fresh), "cached": len(outs) - len(fresh), "prompt_tokens": tokens, "seconds": seconds,
            "first_chat": chats[0] if chats else None}


def run_setting(backend: Any, setting: Setting, rows: list[dict], labels: list[str], pool: ExamplePool,
                method: str, seed: int, repeats: int, pool_size: int | None = None,
                max_new_tokens: int = 8) -> dict[str, Any]:
    """`repeats` passes with different seeded draws; one pass where nothing is drawn: k = 0, or nearest/mmr over
    the whole train split (the same examples every time)."""
    whole = setting.strategy in PER_QUERY and (pool_size is None or pool_size >= len(pool.rows))
    runs = []
    for r in range(1 if setting.k == 0 or whole else repeats):
        s = repeat_seed(seed, r)
        if setting.k and setting.strategy in PER_QUERY:
            sub = pool.subset(pool_size, s)
            sub.embed_queries([row["text"] for row in rows])

            def examples_for(i: int, row: dict, sub: ExamplePool = sub) -> list[dict]:
                return select(sub, setting.strategy, setting.k, s, query_text=row["text"], labels=labels)
            fixed = None
        else:
            fixed = select(pool, setting.strategy, setting.k, s, labels=labels)

            def examples_for(i: int, row: dict, fixed: list = fixed, s: int = s) -> list[dict]:
                if any(ex["text"] == row["text"] for ex in fixed):  # never the scored row itself
                    return select(pool, setting.strategy, setting.k, s, query_text=row["text"], labels=labels)
                return fixed
        out = predict(backend, setting.variant, rows, labels, method, examples_for, max_new_tokens)
        out["examples"] = fixed
        out["seed"] = s
        runs.append(out)
    return {"runs": runs}


def _confusions(y: np.ndarray, preds: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """Resampled confusion matrices per repeat: (repeats, resamples, k, k)."""
    from llmopt.eval.metrics import _resampled_confusions

    return np.stack([_resampled_confusions(y, p, k, idx) for p in preds])


def _macro_f1(cms: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 over the real labels (the unparseable column counts against recall, it is not a class)."""
    from llmopt.eval.metrics import _f1_from_confusions

    return _f1_from_confusions(cms)[..., :n_labels].mean(axis=-1)


def repeat_stats(y: list[int], preds: list[list[int]], n_labels: int, resamples: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Accuracy and macro-F1 averaged over repeats, each with a 95% interval from resampling rows (the repeats of a
    resample share its rows), plus the spread of accuracy over the repeats. A prediction of n_labels = unparseable."""
    from llmopt.eval.metrics import accuracy, bootstrap_indices, confusion

    k = n_labels + 1
    y_, p_ = np.asarray(y), np.asarray(preds)
    idx = bootstrap_indices(len(y_), resamples, seed)
    cms = _confusions(y_, p_, k, idx)
    acc = (np.trace(cms, axis1=2, axis2=3) / len(y_)).mean(axis=0)
    f1 = _macro_f1(cms, n_labels).mean(axis=0)
    per = [accuracy(y_, p) for p in p_]
    return {"n": int(len(y_)), "repeats": len(p_), "accuracy": float(np.mean(per)),
            "ci": [float(np.percentile(acc, 2.5)), float(np.percentile(acc, 97.5))],
            "macro_f1": float(np.mean([_macro_f1(confusion(y_, p, k), n_labels) for p in p_])),
            "macro_f1_ci": [float(np.percentile(f1, 2.5)), float(np.percentile(f1, 97.5))],
            "accuracy_per_repeat": per, "accuracy_sd": float(np.std(per, ddof=1)) if len(per) > 1 else 0.0}


def paired_repeats(y: list[int], a: list[list[int]], b: list[list[int]], n_labels: int, resamples: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """A minus B (each averaged over its repeats) on the same row resamples: difference, 95% interval, two-sided p.
    With one repeat each and no unparseable answers this is eval.metrics.paired_bootstrap."""
    from llmopt.eval.metrics import bootstrap_indices

    k = n_labels + 1
    y_ = np.asarray(y)
    idx = bootstrap_indices(len(y_), resamples, seed)
    out: dict[str, Any] = {"resamples": resamples}
    ca, cb = _confusions(y_, np.asarray(a), k, idx), _confusions(y_, np.asarray(b), k, idx)
    n = len(y_)
    full = np.arange(n)[None, :]
    fa, fb = _confusions(y_, np.asarray(a), k, full), _confusions(y_, np.asarray(b), k, full)
    for name, f in (("accuracy", lambda c: (np.trace(c, axis1=2, axis2=3) / n).mean(axis=0)),
                    ("macro_f1", lambda c: _macro_f1(c, n_labels).mean(axis=0))):
        diff = f(ca) - f(cb)
        p = min(1.0, 2 * min(float(np.mean(diff <= 0)), float(np.mean(diff >= 0))))
        out[name] = {"diff": float(f(fa)[0] - f(fb)[0]),
                     "ci": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))], "p_value": p}
    return out
