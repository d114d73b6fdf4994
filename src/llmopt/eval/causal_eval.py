"""One causal LM through every measurement the evaluate stage reports: perplexity [95% CI], prefill/decode
tokens/s, peak memory, size on disk, and (when an instruction is known) classification accuracy with intervals."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any


def evaluate_causal_model(path: Path, *, threads: int, ppl_texts: list[str], window: int, stride: int,
                          max_ppl_tokens: int | None, prompts: list[str], max_new_tokens: int, warmup: int,
                          resamples: int, seed: int, allow_pickle: bool = False,
                          classify_rows: tuple[list[str], list[int], list[str]] | None = None,
                          instruction: dict[str, Any] | None = None, sft_scoring: str = "loglik") -> dict[str, Any]:
    """Metrics of one causal model (a folder, GGUF folder or *.gguf); `classify_rows` = (texts, label ids,
    labels) of the data split, scored when the model folder or `instruction` gives a template."""
    import numpy as np

    from llmopt.eval.causal import load_causal_runner, size_on_disk
    from llmopt.data.sft import read_instruction
    from llmopt.eval.generation import classify, measure_generation
    from llmopt.eval.metrics import classification_report
    from llmopt.eval.perplexity import perplexity, token_stream
    from llmopt.eval.speed import PeakRSS

    path = Path(path)
    instruction = read_instruction(path) or instruction
    n_ctx = max(window, 2048, max_new_tokens + 512)
    with PeakRSS() as mem:  # loading, perplexity and label scoring; generation is timed without the sampler
        runner = load_causal_runner(path, threads, allow_pickle=allow_pickle, n_ctx=n_ctx)
        ids = token_stream(runner.tokenizer, ppl_texts, max_ppl_tokens)
        ppl = perplexity(runner, ids, window, stride, resamples, seed)
        cls = None
        if classify_rows is not None and instruction:
            texts, y, labels = classify_rows
            out = classify(runner, texts, labels, instruction, sft_scoring)
            pred = np.asarray(out["preds"])
            shown = list(labels)
            if out["unparseable"]:  # counted as wrong, as their own column of the confusion matrix
                shown.append("(unparseable)")
                pred = np.where(pred < 0, len(labels), pred)
            cls = {**classification_report(np.asarray(y), pred, shown, resamples, seed),
                   "method": sft_scoring, "unparseable": out["unparseable"], "label_words": out["label_words"],
                   "instruction_from": "model folder" if read_instruction(path) else "evaluate config",
                   "preds": pred.tolist(), "answers": out["answers"]}  # the stage moves these to predictions/
    gen = measure_generation(runner, prompts, max_new_tokens, warmup)
    entry = {
        "kind": "causal_lm", "runtime": runner.runtime, "path": str(path), "params": runner.params,
        "ppl": ppl["ppl"], "ppl_ci": ppl["ppl_ci"], "perplexity": ppl,
        "prefill_tok_s": gen["prefill_tok_s"], "decode_tok_s": gen["decode_tok_s"], "generation": gen,
        "peak_rss_mb": mem.peak / 2**20, "peak_rss_delta_mb": mem.peak_delta / 2**20,
        "size_bytes": size_on_disk(path), "size_mb": size_on_disk(path) / 2**20,
    }
    if cls is not None:
        entry["classification"] = cls
    if hasattr(runner, "close"):
        runner.close()
    del runner
    gc.collect()
    return entry
