"""Domain-adaptation measures on held-out documents, each with a 95% bootstrap interval over documents:

- encoders: masked-LM loss on a held-out set masked once with a fixed seed (`mlm_loss`), and pseudo-perplexity
  (`pseudo_perplexity`: every non-special token masked in turn, one batched forward per group of masked copies;
  PPPL = exp(−mean log p(token | the rest)), Salazar et al. 2020);
- causal LMs: perplexity through `eval.perplexity` windows, per document (`causal_perplexity`).

Every measure keeps the per-document NLL sums and token counts, so `change` compares before and after on the
same resampled documents (a paired interval of the perplexity ratio).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from llmopt.errors import DataError

IGNORE = -100


def _summary(sums: np.ndarray, counts: np.ndarray, resamples: int, seed: int, **extra: Any) -> dict[str, Any]:
    """Token-weighted mean NLL and perplexity with a percentile-bootstrap 95% interval resampling documents."""
    keep = counts > 0
    sums, counts = sums[keep], counts[keep]
    if not len(sums):
        raise DataError("no scoreable tokens in the held-out documents; give longer texts.")
    nll = float(sums.sum() / counts.sum())
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(resamples, len(sums)))
    boot = np.exp(sums[idx].sum(axis=1) / counts[idx].sum(axis=1))
    return {"ppl": _exp(nll), "mean_nll": nll,
            "ppl_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "tokens_scored": int(counts.sum()), "documents": int(len(sums)), "ci_over": "documents",
            "bootstrap_resamples": resamples, **extra,
            "doc_nll_sums": sums.tolist(), "doc_tokens": counts.astype(int).tolist()}


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")


def _per_doc(docs: list[int], nll: list[float], tokens: list[int], n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    sums, counts = np.zeros(n_docs), np.zeros(n_docs)
    np.add.at(sums, docs, nll)
    np.add.at(counts, docs, tokens)
    return sums, counts


def change(before: dict[str, Any], after: dict[str, Any], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """after/before perplexity ratio with a paired bootstrap 95% interval (the same documents resampled for both);
    verdict 'lower' / 'higher' only when the interval excludes 1."""
    sb, cb = np.asarray(before["doc_nll_sums"]), np.asarray(before["doc_tokens"], float)
    sa, ca = np.asarray(after["doc_nll_sums"]), np.asarray(after["doc_tokens"], float)
    if len(sb) != len(sa):
        raise ValueError(f"before and after scored different documents ({len(sb)} vs {len(sa)})")
    idx = np.random.default_rng(seed).integers(0, len(sb), size=(resamples, len(sb)))
    ratio = np.exp(sa[idx].sum(1) / ca[idx].sum(1) - sb[idx].sum(1) / cb[idx].sum(1))
    lo, hi = float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))
    point = _exp(sa.sum() / ca.sum() - sb.sum() / cb.sum())
    return {"ppl_ratio": point, "ppl_ratio_ci": [lo, hi],
            "verdict": "lower" if hi < 1 else "higher" if lo > 1 else "no significant change"}


def strip(measure: dict[str, Any] | None) -> dict[str, Any] | None:
    """The measure without its per-document arrays (for metrics.json)."""
    if measure is None:
        return None
    return {k: v for k, v in measure.items() if k not in ("doc_nll_sums", "doc_tokens")}


# ---------------------------------------------------------------- encoders


def mlm_loss(model: Any, examples: list[dict], pad_token_id: int, batch_size: int = 64, resamples: int = 1000,
             seed: int = 0) -> dict[str, Any]:
    """Token-weighted masked-LM NLL of pre-masked examples (input_ids with masks, labels -100 where not masked;
    `training.mlm.mask_fixed`), `ppl` = exp of it, interval over the examples' `doc`."""
    from llmopt.training.mlm import masked_nll

    docs, nlls, toks = masked_nll(model, examples, pad_token_id, batch_size)
    sums, counts = _per_doc(docs, nlls, toks, max(docs, default=-1) + 1)
    return {**_summary(sums, counts, resamples, seed, measure="held-out masked-LM loss (fixed masks)"),
            "loss": float(sums.sum() / max(counts.sum(), 1))}


def pseudo_perplexity(model: Any, tokenizer: Any, examples: list[dict], batch_size: int = 64, resamples: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Pseudo-perplexity of encoded chunks (`training.mlm.encode_documents`): each non-special token is replaced
    by [MASK] in its own copy of the chunk and scored as −log p(token | every other token); copies of chunks of
    similar length go through the model together, `batch_size` at a time."""
    import torch

    from llmopt.training.mlm import masked_positions_head

    mask_id, pad = tokenizer.mask_token_id, tokenizer.pad_token_id or 0
    head = masked_positions_head(model)
    jobs = [(i, p) for i, e in enumerate(examples) for p, sp in enumerate(e["special_tokens_mask"]) if not sp]
    jobs.sort(key=lambda j: len(examples[j[0]]["input_ids"]))
    docs, nlls = [], []
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, len(jobs), batch_size):
                batch = jobs[s:s + batch_size]
                width = max(len(examples[i]["input_ids"]) for i, _ in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                att = torch.zeros((len(batch), width), dtype=torch.long)
                for r, (i, p) in enumerate(batch):
                    row = examples[i]["input_ids"]
                    ids[r, :len(row)] = torch.tensor(row)
                    att[r, :len(row)] = 1
                    ids[r, p] = mask_id
                pos = torch.tensor([p for _, p in batch])
                rows = torch.arange(len(batch))
                if head is not None:  # the vocabulary logits at the masked position only
                    logits = head(model.base_model(input_ids=ids, attention_mask=att).last_hidden_state[rows, pos])
                else:
                    logits = model(input_ids=ids, attention_mask=att).logits[rows, pos]
                logits = logits.float()
                target = torch.tensor([examples[i]["input_ids"][p] for i, p in batch])
                nll = torch.nn.functional.cross_entropy(logits, target, reduction="none")
                docs += [examples[i]["doc"] for i, _ in batch]
                nlls += nll.double().tolist()
    finally:
        model.train(was)
    sums, counts = _per_doc(docs, nlls, [1] * len(docs), max((e["doc"] for e in examples), default=-1) + 1)
    return _summary(sums, counts, resamples, seed, measure="pseudo-perplexity (each token masked in turn)")


# ---------------------------------------------------------------- causal LMs


def causal_perplexity(runner: Any, tokenizer: Any, docs: list[str], window: int = 512, resamples: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Perplexity of every document on its own (its tokens in `eval.perplexity.windows` of `window`, no overlap;
    the first token of each document is context only), token-weighted, interval over documents. `runner` has
    `nll(ids)` (eval.causal.HFRunner)."""
    from llmopt.eval.perplexity import windows

    sums, counts = np.zeros(len(docs)), np.zeros(len(docs))
    for d, text in enumerate(docs):
        ids = tokenizer(text)["input_ids"]
        for begin, end, scored in windows(len(ids), window, window):
            nll = runner.nll(ids[begin:end])
            sums[d] += float(np.sum(nll[-scored:]))
            counts[d] += scored
    return _summary(sums, counts, resamples, seed, measure=f"perplexity per document, windows of {window} tokens")


def cap_documents(docs: list[str], tokenizer: Any, max_tokens: int | None) -> list[str]:
    """The first documents, in order, up to about `max_tokens` tokens in all (at least one; all with None)."""
    if max_tokens is None:
        return list(docs)
    out, total = [], 0
    for d in docs:
        if out and total >= max_tokens:
            break
        out.append(d)
        total += len(tokenizer(d, add_special_tokens=False)["input_ids"])
    return out


# ---------------------------------------------------------------- before / after


def measure_corpora(model: Any, tokenizer: Any, kind: str, corpora: dict[str, list[str]], *, chunk: int,
                    batch_size: int = 64, threads: int = 1, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every corpus (name → documents) measured on one model: kind 'mlm' → pseudo-perplexity of its chunks of
    `chunk` tokens; kind 'causal' → perplexity in windows of `chunk` tokens."""
    out = {}
    for name, docs in corpora.items():
        if kind == "mlm":
            from llmopt.training.mlm import encode_documents

            out[name] = pseudo_perplexity(model, tokenizer, encode_documents(tokenizer, docs, chunk), batch_size,
                                          resamples, seed)
        else:
            from llmopt.eval.causal import HFRunner

            out[name] = causal_perplexity(HFRunner(model, tokenizer, "transformers", threads), tokenizer, docs, chunk,
                                          resamples, seed)
    return out


def before_after(before: dict[str, Any] | None, after: dict[str, Any], resamples: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Per corpus: the measure before and after (without per-document arrays) and the paired change."""
    out = {}
    for name, a in after.items():
        b = (before or {}).get(name)
        out[name] = {"before": strip(b), "after": strip(a),
                     "change": change(b, a, resamples, seed) if b is not None else None}
    return out
