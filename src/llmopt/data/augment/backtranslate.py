"""Back-translation (English → pivot → English) with pluggable translators: `apertium` (rule-based, Debian
`apertium-eng-spa`) and `marian` (a local pair of MarianMT folders).

A translator round-trips a batch of texts or raises TranslationError. `back_translate` runs batches, retries
a failed batch once, and reports it if it fails again; the rows of the batches done so far are kept.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

APERTIUM_HINT = "install it with `sudo apt-get install apertium-eng-spa` (Debian/Ubuntu; `make install` does it as root)"


class TranslationError(RuntimeError):
    """A batch the translator could not round-trip (process failed, output misaligned)."""


class Translator(Protocol):
    name: str

    def round_trip(self, texts: list[str]) -> list[str]: ...


class Apertium:
    """`apertium -u eng-spa | apertium -u spa-eng` on many rows per call, separated by numbered marker lines
    (`[[[i]]]` between blank lines: apertium passes them through untouched), so a batch is two processes."""

    _SEP = re.compile(r"^\s*\[\[\[(\d+)\]\]\]\s*$", re.M)

    def __init__(self, forward: str = "eng-spa", backward: str = "spa-eng", timeout_s: float = 300) -> None:
        self.forward, self.backward, self.timeout_s = forward, backward, timeout_s
        self.name = f"apertium {forward}|{backward}"
        binary = shutil.which("apertium")
        if binary is None:
            from llmopt.errors import DataError

            raise DataError(f"back-translation with apertium: the `apertium` command is not on PATH; {APERTIUM_HINT}.")
        self.binary = binary
        for pair in (forward, backward):  # a missing language pair fails here, once, not on every batch
            try:
                self._call(pair, "test\n")
            except TranslationError as e:
                from llmopt.errors import DataError

                raise DataError(f"back-translation with apertium: pair {pair} does not run ({e}); {APERTIUM_HINT} "
                                "(or the package of that pair).") from None

    def _call(self, pair: str, text: str) -> str:
        try:
            p = subprocess.run([self.binary, "-u", pair], input=text, capture_output=True, text=True,
                               timeout=self.timeout_s)
        except subprocess.TimeoutExpired as e:
            raise TranslationError(f"apertium {pair} timed out after {self.timeout_s:g} s") from e
        if p.returncode != 0:
            raise TranslationError(f"apertium {pair} exited {p.returncode}: {' '.join(p.stderr.split())[:300]}")
        return p.stdout

    def round_trip(self, texts: list[str]) -> list[str]:
        joined = "".join(f"[[[{i}]]]\n\n{' '.join(t.split())}\n\n" for i, t in enumerate(texts))
        out = self._call(self.backward, self._call(self.forward, joined))
        parts = self._SEP.split(out)
        ids = [int(x) for x in parts[1::2]]
        if ids != list(range(len(texts))):
            raise TranslationError(f"apertium output has markers {ids[:5]}… for {len(texts)} rows: misaligned")
        return [" ".join(p.split()) for p in parts[2::2]]


class Marian:
    """Two local MarianMT folders (source→pivot, pivot→source), greedy decoding on CPU."""

    def __init__(self, forward: Path, backward: Path, max_new_tokens: int = 128, allow_pickle: bool = False) -> None:
        from transformers import AutoTokenizer, MarianMTModel

        self.name = f"marian {Path(forward).name}|{Path(backward).name}"
        self.max_new_tokens = max_new_tokens
        self.models = []
        for folder in (forward, backward):
            try:  # opus-mt folders hold a SentencePiece MarianTokenizer; a tokenizer.json works too
                tok = AutoTokenizer.from_pretrained(str(folder))
            except (ImportError, ValueError, OSError) as e:
                from llmopt.errors import ModelError

                raise ModelError(f"marian translator {folder}: its tokenizer does not load ({e}); a MarianTokenizer "
                                 "needs `pip install sentencepiece`.") from e
            # safetensors only, unless --allow-pickle (then a pytorch_model.bin loads with weights_only=True)
            model = MarianMTModel.from_pretrained(str(folder), use_safetensors=not allow_pickle or None).eval()
            self.models.append((tok, model))

    def _translate(self, tok: Any, model: Any, texts: list[str]) -> list[str]:
        import torch

        enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=256)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=self.max_new_tokens, num_beams=1, do_sample=False)
        return tok.batch_decode(out, skip_special_tokens=True)

    def round_trip(self, texts: list[str]) -> list[str]:
        for tok, model in self.models:
            texts = self._translate(tok, model, texts)
        return texts


@dataclass
class BackTranslation:
    """Round-tripped text per input index, and the batches that failed twice (start, end, error)."""

    texts: dict[int, str] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)


def batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, size):
        yield s, min(n, s + size)


def back_translate(texts: list[str], translator: Translator, batch_rows: int = 64, retries: int = 1,
                   on_batch: Callable[[int, int], None] | None = None) -> BackTranslation:
    """Round-trip every text in batches; a failed batch is retried `retries` times, then recorded in `failed`."""
    out = BackTranslation()
    for s, e in batches(len(texts), batch_rows):
        for attempt in range(retries + 1):
            try:
                got = translator.round_trip(texts[s:e])
                if len(got) != e - s:
                    raise TranslationError(f"{translator.name} returned {len(got)} texts for {e - s}")
                out.texts.update(zip(range(s, e), got))
                break
            except TranslationError as err:
                if attempt == retries:
                    out.failed.append({"start": s, "end": e, "error": str(err), "attempts": attempt + 1})
        if on_batch:
            on_batch(s, e)
    return out
