"""The llama.cpp runner (llama-cpp-python, optional: `make llamacpp`) on the shipped SmolLM2 Q4_1 GGUF."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (optional; `make llamacpp` builds it)")

from llmopt.eval.causal import LlamaCppRunner, load_causal_runner  # noqa: E402
from llmopt.eval.generation import chat_ids  # noqa: E402
from llmopt.eval.perplexity import perplexity, token_stream  # noqa: E402

TEXT = ("The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure in "
        "Paris. Its base is square, measuring 125 metres on each side. ") * 2


@pytest.fixture(scope="module")
def runner():
    from llmopt.llm import smollm2_gguf

    r = load_causal_runner(smollm2_gguf(), threads=2)
    yield r
    r.close()


def test_bare_gguf_runs_in_llama_cpp(runner: LlamaCppRunner) -> None:
    assert runner.runtime == "llama.cpp" and runner.params > 100_000_000
    ids = token_stream(runner.tokenizer, [TEXT])[:64]
    nll = runner.nll(ids)
    assert nll.shape == (63,) and np.all(np.isfinite(nll)) and np.all(nll >= 0)
    res = perplexity(runner, ids, window=32, stride=32)
    assert 1 < res["ppl"] < 200 and res["tokens_scored"] == 62


def test_greedy_decode_matches_full_logits_and_is_forced(runner: LlamaCppRunner) -> None:
    ids = chat_ids(runner.tokenizer, "Name three colours.")
    pre, dec, new = runner.generate_timed(ids, 6)
    assert len(new) == 6 and pre > 0 and dec > 0
    # the speed context (last-token logits only) picks what the all-logits context's argmax picks
    full = runner._llm(True)
    full.reset()
    full.eval(ids + new[:2])
    scores = np.asarray(full.scores[: len(ids) + 2])
    assert [int(np.argmax(scores[len(ids) - 1 + i])) for i in range(3)] == new[:3]


@pytest.mark.slow
def test_q4_1_perplexity_close_to_dequantized_transformers(runner: LlamaCppRunner) -> None:
    """Same weights (the Q4_1 blocks, dequantized in transformers): llama.cpp's perplexity within 1%."""
    from llmopt.models import builtin_model_path

    hf = load_causal_runner(builtin_model_path("smollm2-135m"), threads=2)
    ids = token_stream(runner.tokenizer, [TEXT * 4])[:256]
    a, b = perplexity(runner, ids, 128, 128)["ppl"], perplexity(hf, ids, 128, 128)["ppl"]
    assert abs(a / b - 1) < 0.01, (a, b)
