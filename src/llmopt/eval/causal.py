"""Runners for causal LMs behind one small interface, so perplexity, speed and label scoring are measured the same
way in every runtime.

A runner has `tokenizer` (the folder's Hugging Face tokenizer: every runtime gets the same token ids), `runtime`
(a label for the report), `nll(ids)` (per-token negative log-likelihood of ids[1:] given the prefix),
`continuation_logprobs(prompt_ids, continuations)` and `generate_timed(prompt_ids, n_new)`.

`load_causal_runner(path, threads)` accepts
- a transformers folder (fp32, eager; a torchao folder — `llmopt_quant.json` {"format": "torchao", ...} and
  `quantization_config` in config.json — loads quantized; `llmopt_runtime.json` {"compile": bool,
  "static_cache": bool} is honoured when present);
- a GGUF folder (one *.gguf + `llmopt_quant.json` {"format": "gguf", ...} + tokenizer files) or a bare *.gguf file:
  run in llama.cpp through llama-cpp-python when it is installed, else dequantized in transformers and labelled
  "transformers (dequantized GGUF)" so nobody mistakes it for llama.cpp's speed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmopt.errors import ModelError

QUANT_FILE = "llmopt_quant.json"
RUNTIME_FILE = "llmopt_runtime.json"
DEQUANTIZED_GGUF = "transformers (dequantized GGUF)"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not readable JSON ({e}); rewrite it or remove it.") from None


def gguf_file_of(path: Path) -> Path | None:
    """The GGUF a path names: the path itself when it is a *.gguf file, the one *.gguf inside a folder, or None."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix == ".gguf" else None
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) > 1:
        raise ModelError(f"{path}: {len(found)} *.gguf files ({', '.join(p.name for p in found)}); keep exactly one.")
    return found[0] if found else None


def is_causal_path(path: Path) -> bool:
    """A causal LM the evaluator should score as one: a *ForCausalLM folder, a GGUF folder or a *.gguf file."""
    from llmopt.llm import is_causal_lm

    path = Path(path)
    return gguf_file_of(path) is not None or is_causal_lm(path)


def _softmax_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p(target) per row of logits (float64 log-sum-exp)."""
    logits = logits.astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return lse - logits[np.arange(len(targets)), targets]


class HFRunner:
    """A transformers causal LM at batch 1 on the CPU with `threads` intra-op threads."""

    def __init__(self, model: Any, tokenizer: Any, runtime: str, threads: int, static_cache: bool = False) -> None:
        self.model, self.tokenizer, self.runtime, self.threads = model, tokenizer, runtime, threads
        self.static_cache = static_cache

    @property
    def params(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def _threads(self) -> Any:
        from llmopt.eval.speed import _torch_threads

        return _torch_threads(self.threads)

    def nll(self, ids: list[int]) -> np.ndarray:
        import torch

        with self._threads(), torch.inference_mode():
            logits = self.model(torch.tensor([ids])).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        return nll.double().numpy()

    def continuation_logprobs(self, prompt_ids: list[int], conts: list[list[int]]) -> list[float]:
        """log p(continuation | prompt) for every continuation in one batched forward (right-padded)."""
        import torch

        seqs = [prompt_ids + c for c in conts]
        width = max(map(len, seqs))
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        start = len(prompt_ids) - 1  # the position that predicts each continuation's first token
        with self._threads(), torch.inference_mode():
            # the LM head only where a continuation token is predicted (it is a fifth of SmolLM2's compute)
            logits = self.model(ids, attention_mask=mask, logits_to_keep=width - start).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for i, c in enumerate(conts):
            out.append(float(logp[i, torch.arange(len(c)), torch.tensor(c)].sum()))
        return out

    def generate_timed(self, prompt_ids: list[int], n_new: int) -> tuple[float, float, list[int]]:
        """Greedy `generate` forced to exactly n_new tokens: (prefill seconds, decode seconds for the n_new - 1
        tokens after the first, new ids). Prefill: one forward over the prompt timed on its own (as llama.cpp's
        is); decode: from the first new token
        to the last (streamer timestamps), so generate's set-up and its prefill are not in it."""
        import torch

        stamps: list[float] = []

        class Clock:  # generate calls put() once with the prompt, then once per new token
            def put(self, value: Any) -> None:
                stamps.append(time.perf_counter())

            def end(self) -> None:
                pass

        ids = torch.tensor([prompt_ids])
        kw: dict[str, Any] = {"cache_implementation": "static"} if self.static_cache else {}
        with self._threads(), torch.inference_mode():
            t0 = time.perf_counter()  # the prefill forward is eager even when the decode step is compiled
            self.model(ids, use_cache=True)
            pre = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                                      min_new_tokens=n_new, do_sample=False, streamer=Clock(),
                                      pad_token_id=self.tokenizer.pad_token_id, **kw)
        new = out[0, len(prompt_ids):].tolist()
        return pre, stamps[-1] - stamps[1], new


class LlamaCppRunner:
    """A GGUF in llama.cpp (llama-cpp-python), fed the folder tokenizer's ids; greedy decoding by argmax."""

    runtime = "llama.cpp"

    def __init__(self, gguf: Path, tokenizer: Any, threads: int, n_ctx: int = 2048) -> None:
        self.gguf, self.tokenizer, self.threads, self.n_ctx = Path(gguf), tokenizer, threads, n_ctx
        self._llms: dict[bool, Any] = {}
        self._llm(False)  # load now: a bad file fails here, inside the memory measurement

    def _llm(self, logits_all: bool) -> Any:
        """One context that keeps every position's logits (perplexity), one that keeps the last only (speed)."""
        if logits_all not in self._llms:
            from llama_cpp import Llama

            self._llms[logits_all] = Llama(model_path=str(self.gguf), n_ctx=self.n_ctx, n_batch=512,
                                           n_threads=self.threads, n_threads_batch=self.threads,
                                           logits_all=logits_all, verbose=False)
        return self._llms[logits_all]

    @property
    def params(self) -> int:
        return int(self._llm(False)._model.n_params())

    def close(self) -> None:
        """Free the llama.cpp contexts now (left to interpreter exit, their finalizers fail noisily)."""
        for llm in self._llms.values():
            llm.close()
        self._llms.clear()

    def nll(self, ids: list[int]) -> np.ndarray:
        llm = self._llm(True)
        llm.reset()
        llm.eval(list(ids))
        logits = np.asarray(llm.scores[: len(ids) - 1])
        return _softmax_nll(logits, np.asarray(ids[1:]))

    def continuation_logprobs(self, prompt_ids: list[int], conts: list[list[int]]) -> list[float]:
        return [-float(self.nll(prompt_ids + c)[len(prompt_ids) - 1:].sum()) for c in conts]

    def generate_timed(self, prompt_ids: list[int], n_new: int) -> tuple[float, float, list[int]]:
        llm = self._llm(False)
        n_vocab = llm.n_vocab()

        def last() -> int:  # without logits_all, `scores` is not filled: read the context's last-token logits
            return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))

        llm.reset()
        t0 = time.perf_counter()
        llm.eval(list(prompt_ids))
        new = [last()]
        t1 = time.perf_counter()
        for _ in range(n_new - 1):  # EOS ignored: exactly n_new tokens
            llm.eval([new[-1]])
            new.append(last())
        return t1 - t0, time.perf_counter() - t1, new


def load_causal_runner(path: Path, threads: int, allow_pickle: bool = False, n_ctx: int = 2048) -> Any:
    """The runner for a causal model folder, GGUF folder or *.gguf file (see the module docstring)."""
    from llmopt.llm import check_gguf, load_causal_lm, load_chat_tokenizer

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: not found. Give a model folder, a GGUF folder or a *.gguf file.")
    gguf = gguf_file_of(path)
    if gguf is not None:
        check_gguf(gguf)
        tok_dir = path if path.is_dir() else None
        tok = (load_chat_tokenizer(tok_dir) if tok_dir and (tok_dir / "tokenizer.json").is_file()
               else _gguf_tokenizer(gguf))
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            return _dequantized_gguf(gguf, tok, threads)
        return LlamaCppRunner(gguf, tok, threads, n_ctx)
    tok = load_chat_tokenizer(path)
    model = load_causal_lm(path, allow_pickle=allow_pickle)
    quant = _read_json(path / QUANT_FILE) if (path / QUANT_FILE).is_file() else {}
    rt = _read_json(path / RUNTIME_FILE) if (path / RUNTIME_FILE).is_file() else {}
    runtime = "transformers fp32 eager"
    if quant.get("format") == "torchao":
        if getattr(model.config, "quantization_config", None) is None:
            raise ModelError(f"{path}: {QUANT_FILE} says torchao {quant.get('scheme')}, but config.json has no "
                             "quantization_config, so the weights would load unquantized; run the quantize stage "
                             "again to rewrite this folder.")
        runtime = f"transformers torchao {quant.get('scheme', '?')}"
    if rt.get("compile"):
        from llmopt.llm import compile_decode

        # the decode step only, on a static cache of one size: compiled once for every prompt; prefill stays eager
        compile_decode(model, max_cache_len=n_ctx)
        runtime = runtime.replace(" eager", "") + " + torch.compile (decode step)"
    if rt.get("static_cache") or rt.get("compile"):
        runtime += " + static cache"
    return HFRunner(model, tok, runtime, threads, static_cache=bool(rt.get("static_cache") or rt.get("compile")))


def _gguf_tokenizer(gguf: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _dequantized_gguf(gguf: Path, tok: Any, threads: int) -> HFRunner:
    """No llama.cpp here: the GGUF's weights dequantized to fp32 in transformers (its quality, not its speed)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # a malformed GGUF fails deep inside the reader
        raise ModelError(f"{gguf}: could not be read as a GGUF model ({type(e).__name__}: {e}).") from None
    return HFRunner(model.eval(), tok, DEQUANTIZED_GGUF, threads)


def size_on_disk(path: Path) -> int:
    """Bytes a deployment ships: the GGUF file, or the folder's safetensors weights."""
    from llmopt.models import weights_size_bytes

    gguf = gguf_file_of(Path(path))
    return gguf.stat().st_size if gguf is not None else weights_size_bytes(Path(path))
