"""Model backends behind one small interface, each call cached on disk (cache.py).

A backend has `name`, `model` (its identity in the cache key), `concurrency` (how many calls may run at once),
`score_labels(messages, words) -> {"logprobs": [...], "prompt_tokens": n}` (log p(word + end of turn | chat) per
answer word) and `generate(messages, max_tokens) -> {"text": str, "prompt_tokens": n, "completion_tokens": m}`.

- `LocalHF`: a Hugging Face causal LM through llmopt's one loader (eval/causal.py `load_causal_runner`), the chat
  template applied; the answer words are scored together: one forward over the prompt, then one batched forward of
  every label's tokens over its KV cache (`shared_prefix_logprobs`; `HFRunner.continuation_logprobs`, which repeats
  the prompt per label, for other runners); free generation is greedy and stops at the end of the turn.
- `OpenAIChat`: an OpenAI-compatible `/chat/completions` endpoint over httpx: `base_url`, `model`, the API key
  read from an environment variable, a timeout, retries with exponential backoff on 429 and 5xx (and on
  connection errors), and at most `max_concurrency` requests in flight (a semaphore).
"""

from __future__ import annotations

import copy
import os
import threading
import time
from pathlib import Path
from typing import Any

from llmopt.errors import ModelError, RecipeError
from llmopt.prompting.cache import CallCache, call_key


class LocalHF:
    """A local causal LM folder (or GGUF) scored and sampled in-process."""

    name = "local"
    concurrency = 1  # one model, one forward at a time; its threads parallelise inside

    def __init__(self, path: Path, threads: int, allow_pickle: bool = False) -> None:
        from llmopt.eval.causal import load_causal_runner

        self.path = Path(path)
        self.runner = load_causal_runner(self.path, threads, allow_pickle=allow_pickle)
        self.tokenizer = self.runner.tokenizer
        self.model = _model_identity(self.path)
        self.calls = 0
        self._held: tuple[list[int], Any] | None = None  # (last prompt ids, their KV cache), see _prefix_cache
        self.reused_tokens = self.computed_tokens = 0  # prompt tokens taken from the held cache / computed

    def chat_ids(self, messages: list[dict]) -> list[int]:
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            text = "\n\n".join(m["content"] for m in messages)
            return tok(text)["input_ids"]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    def continuations(self, words: list[str]) -> list[list[int]]:
        """Each answer word's tokens and the turn's closing EOS (as an SFT model was trained to answer)."""
        tok = self.tokenizer
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        return [tok(w, add_special_tokens=False)["input_ids"] + eos for w in words]

    def score_labels(self, messages: list[dict], words: list[str]) -> dict[str, Any]:
        self.calls += 1
        ids = self.chat_ids(messages)
        conts = self.continuations(words)
        if self.shared_prefix:
            prefix = self._prefix_cache(ids)
            reused = len(prefix[0]) if prefix else 0
            scores, cache = shared_prefix_logprobs(self.runner, ids, conts, prefix, keep=True)
            self._held = (ids, cache)
            self.reused_tokens += reused
            self.computed_tokens += len(ids) - reused
        else:  # e.g. llama.cpp: the runner's own scoring
            scores = self.runner.continuation_logprobs(ids, conts)
        return {"logprobs": scores, "prompt_tokens": len(ids)}

    def _prefix_cache(self, ids: list[int]) -> tuple[list[int], Any] | None:
        """The KV cache of the longest prefix this prompt shares with the previous one (the system prompt, a fixed
        draw's few-shot turns, the instruction before the text): 300 rows under one set of examples compute the
        examples once, not 300 times."""
        if self._held is None:
            return None
        prev, cache = self._held
        n = 0
        for a, b in zip(prev, ids[:-1]):  # at least the last token is computed: its logits are needed
            if a != b:
                break
            n += 1
        if n < 8:
            return None
        cache = copy.deepcopy(cache)
        if len(prev) > n:
            cache.crop(-(len(prev) - n))
        return ids[:n], cache

    @property
    def shared_prefix(self) -> bool:
        from llmopt.eval.causal import HFRunner

        return isinstance(self.runner, HFRunner) and not self.runner.static_cache

    def generate(self, messages: list[dict], max_tokens: int) -> dict[str, Any]:
        import torch

        self.calls += 1
        ids = self.chat_ids(messages)
        tok = self.tokenizer
        x = torch.tensor([ids])
        with self.runner._threads(), torch.inference_mode():
            out = self.runner.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens,
                                             do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        new = out[0, len(ids):].tolist()
        return {"text": tok.decode(new, skip_special_tokens=True), "prompt_tokens": len(ids),
                "completion_tokens": len(new)}


def shared_prefix_logprobs(runner: Any, prompt_ids: list[int], conts: list[list[int]],
                           prefix: tuple[list[int], Any] | None = None, keep: bool = False) -> Any:
    """log p(continuation | prompt) for every continuation, the prompt computed once: one forward over the prompt
    (its last position predicts every continuation's first token), then one batched forward of the continuations'
    remaining tokens over copies of the prompt's KV cache. The same numbers as HFRunner.continuation_logprobs, which
    runs the whole prompt once per label (6 times for TREC's 6 labels). `prefix` = (the first ids of the prompt,
    their KV cache, which this changes): only the rest of the prompt is computed. keep: return (scores, the prompt's
    KV cache) for the next prompt to start from."""
    import torch

    model = runner.model
    with runner._threads(), torch.inference_mode():
        start = len(prefix[0]) if prefix is not None else 0
        out = model(torch.tensor([prompt_ids[start:]]), use_cache=True, logits_to_keep=1,  # the LM head: last only
                    past_key_values=prefix[1] if prefix is not None else None)
        kept = copy.deepcopy(out.past_key_values) if keep else None  # before the labels extend it
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        scores = [float(first[c[0]]) for c in conts]
        width = max(len(c) for c in conts) - 1
        if width > 0:
            n = len(conts)
            cache = out.past_key_values
            cache.batch_repeat_interleave(n)
            x = torch.tensor([c[:-1] + [c[-1]] * (width - len(c) + 1) for c in conts])  # right-padded
            mask = torch.tensor([[1] * len(prompt_ids) + [1] * (len(c) - 1) + [0] * (width - len(c) + 1)
                                 for c in conts])
            logp = torch.log_softmax(model(x, past_key_values=cache, attention_mask=mask).logits.float(), dim=-1)
            for i, c in enumerate(conts):
                scores[i] += float(logp[i, torch.arange(len(c) - 1), torch.tensor(c[1:])].sum())
    return (scores, kept) if keep else scores


def _model_identity(path: Path) -> str:
    """The path plus the size and modification time of its weights: a retrained model at the same path is new."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".gguf",
                                                                                            ".bin"))
    stamp = ",".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return f"{path.resolve()}|{stamp}"


class OpenAIChat:
    """An OpenAI-compatible chat-completions endpoint (free generation only: label log-probabilities are not part
    of the chat API every server implements)."""

    name = "openai"
    RETRY_STATUS = (429, 500, 502, 503, 504)

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout_s: float = 60.0,
                 retries: int = 4, backoff_s: float = 0.5, max_concurrency: int = 4) -> None:
        import httpx

        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise RecipeError(f"backend.api_key_env: the environment variable {api_key_env} is not set; export "
                                  "it with the API key, or remove api_key_env for a server without one.")
            headers["Authorization"] = f"Bearer {key}"
        self.base_url, self.model = base_url.rstrip("/"), model
        self.retries, self.backoff_s, self.concurrency = retries, backoff_s, max_concurrency
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)
        self._lock = threading.Lock()
        self.calls = 0  # requests sent, retries included
        self.retried = 0

    def score_labels(self, messages: list[dict], words: list[str]) -> dict[str, Any]:
        raise RecipeError("method: loglik needs a local backend (label log-likelihoods); with an OpenAI-compatible "
                          "endpoint use method: generate.")

    def generate(self, messages: list[dict], max_tokens: int) -> dict[str, Any]:
        body = self._post({"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0})
        try:
            text = body["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ModelError(f"{self.base_url}/chat/completions: the answer has no choices[0].message.content "
                             f"({str(body)[:200]}).") from None
        usage = body.get("usage") or {}
        return {"text": text, "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens")}

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = f"{self.base_url}/chat/completions"
        last = ""
        with self._sem:  # at most max_concurrency requests in flight, retries and their waits included
            for attempt in range(self.retries + 1):
                with self._lock:
                    self.calls += 1
                    self.retried += attempt > 0
                try:
                    r = self._client.post("/chat/completions", json=payload)
                except httpx.TransportError as e:  # connection refused, reset, timed out: worth another try
                    last = f"{type(e).__name__}: {e}"
                else:
                    if r.status_code < 400:
                        try:
                            return r.json()
                        except ValueError:
                            raise ModelError(f"{url}: the answer is not JSON ({r.text[:200]!r}).") from None
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                    if r.status_code not in self.RETRY_STATUS:
                        raise ModelError(f"{url}: {last}. Check base_url, model and the API key.")
                if attempt < self.retries:
                    time.sleep(self.backoff_s * 2 ** attempt)
        raise ModelError(f"{url}: failed after {self.retries + 1} tries; last: {last}.")

    def close(self) -> None:
        self._client.close()


class Cached:
    """A backend whose every call goes through the on-disk cache first: a hit never reaches the model."""

    def __init__(self, inner: Any, cache: CallCache) -> None:
        self.inner, self.cache = inner, cache
        self.name, self.model, self.concurrency = inner.name, inner.model, inner.concurrency

    def _call(self, kind: str, messages: list[dict], params: dict[str, Any], fn: Any) -> dict[str, Any]:
        key = call_key(self.name, self.model, messages, {"call": kind, **params})
        hit = self.cache.get(key)
        if hit is not None:
            return {**hit, "cached": True}
        out = fn()
        self.cache.put(key, out)
        return {**out, "cached": False}

    def score_labels(self, messages: list[dict], words: list[str]) -> dict[str, Any]:
        return self._call("score_labels", messages, {"words": words},
                          lambda: self.inner.score_labels(messages, words))

    def generate(self, messages: list[dict], max_tokens: int) -> dict[str, Any]:
        return self._call("generate", messages, {"max_tokens": max_tokens, "temperature": 0.0},
                          lambda: self.inner.generate(messages, max_tokens))
