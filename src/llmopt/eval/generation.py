"""Generation speed at batch 1 (prefill and decode tokens/s, separately, after warm-up, greedy, exactly N new
tokens) and classification-as-instruction scoring of a causal LM (label log-likelihood or parsed greedy answer)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from llmopt.errors import DataError, ModelError

# the fixed speed prompts: short chat-style requests of different lengths, the same for every model
PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short story about a robot who learns to paint.",
    "What are the main differences between a cat and a dog as pets?",
    "Give me three tips for getting better sleep.",
    "Summarize the plot of a classic detective novel in one paragraph.",
    "How does a bicycle stay upright while moving?",
    "Describe the water cycle to a ten-year-old.",
    "Write a polite email asking a colleague to review a document.",
    "What is the capital of France, and what is it famous for?",
    "List some healthy breakfast ideas for a busy morning.",
    "Why do leaves change colour in autumn?",
    "Write a haiku about the ocean at night.",
    "Explain what a computer program is in simple words.",
    "What should I pack for a weekend hiking trip?",
    "Describe how bread is made, step by step.",
    "What are the benefits of learning a second language?",
    "Tell me a fun fact about the Moon.",
    "How can I make my home more energy efficient?",
    "Write a short dialogue between a teacher and a curious student.",
    "What is the difference between weather and climate?",
    "Give a brief history of the printing press.",
    "Explain how a rainbow forms after rain.",
    "Suggest a name for a friendly neighbourhood bakery and explain why.",
    "What makes a good team leader?",
]


def read_prompts(path: Path) -> list[str]:
    """Speed prompts from a .txt file (one per non-empty line) or a .jsonl file (`prompt` or `text` per row)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prompts file not found.")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if path.suffix != ".jsonl":
        out = lines
    else:
        out = []
        for i, ln in enumerate(lines, 1):
            try:
                row = json.loads(ln)
            except ValueError as e:
                raise DataError(f"{path}:{i}: not valid JSON ({e.msg}).") from None
            p = row.get("prompt", row.get("text")) if isinstance(row, dict) else None
            if not isinstance(p, str) or not p.strip():
                raise DataError(f"{path}:{i}: each row needs a string field 'prompt' (or 'text').")
            out.append(p)
    if not out:
        raise DataError(f"{path}: no prompts.")
    return out


def chat_ids(tokenizer: Any, user_text: str) -> list[int]:
    """A one-turn chat with the generation prompt, through the tokenizer's chat template (plain text without one)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(user_text)["input_ids"]


def measure_generation(runner: Any, prompts: list[str], max_new_tokens: int = 128, warmup: int = 2) -> dict[str, Any]:
    """Median prefill tokens/s (prompt tokens / time of the prefill forward) and median decode tokens/s (the new
    tokens after the first / their time, prefill excluded) over the prompts, greedy, exactly max_new_tokens each."""
    ids = [chat_ids(runner.tokenizer, p) for p in prompts]
    # a compiled decode step (llmopt.llm.compile_decode) compiles in the first warm-up call, once for all prompts
    warm = ids[:warmup]
    for p in warm:
        runner.generate_timed(p, min(max_new_tokens, 16))
    prefill, decode, runs = [], [], []
    for p in ids:
        t_pre, t_dec, new = runner.generate_timed(p, max_new_tokens)
        if len(new) != max_new_tokens:
            raise ModelError(f"{runner.runtime}: generated {len(new)} tokens where {max_new_tokens} were forced.")
        prefill.append(len(p) / t_pre)
        if max_new_tokens > 1:
            decode.append((max_new_tokens - 1) / t_dec)
        runs.append({"prompt_tokens": len(p), "prefill_s": t_pre, "decode_s": t_dec})
    return {"prefill_tok_s": statistics.median(prefill), "decode_tok_s": statistics.median(decode) if decode else None,
            "prompts": len(ids), "new_tokens": max_new_tokens,
            "prompt_tokens_median": statistics.median(len(p) for p in ids),
            "warmup": len(warm), "runs": runs}


# --- classification as instruction -------------------------------------------------------------------------------

def build_prompt(instruction: dict[str, Any], text: str, words: dict[str, str]) -> str:
    """The user turn, exactly as the finetune stage built it for SFT (data.sft.build_messages): the template with
    {text} and {labels} (the answer words, comma-separated) filled in."""
    from llmopt.data.sft import build_messages, template_fields

    template = instruction.get("template")
    try:
        template_fields(template if isinstance(template, str) else "")
    except ValueError as e:
        raise DataError(f"instruction template {template!r}: {e}.") from None
    return build_messages(text, {"template": template, "label_words": words})[0]["content"]


def classify(runner: Any, texts: list[str], labels: list[str], instruction: dict[str, Any],
             method: str = "loglik", max_new_tokens: int = 8) -> dict[str, Any]:
    """Predicted label index per text: by the log-likelihood of each label's answer word after the chat prompt
    (one forward per text, every label scored), or by a greedy answer parsed to a label (unparseable → -1)."""
    tok = runner.tokenizer
    from llmopt.data.sft import label_word_map, parse_label

    words = label_word_map(labels, instruction.get("label_words"))
    # the answer word and the turn's closing EOS, as an SFT model was trained to answer (training/causal.py)
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    conts = [tok(w, add_special_tokens=False)["input_ids"] + eos for w in words.values()]
    preds, answers = [], []
    for text in texts:
        ids = chat_ids(tok, build_prompt(instruction, text, words))
        if method == "loglik":
            scores = runner.continuation_logprobs(ids, conts)
            preds.append(max(range(len(labels)), key=lambda i: scores[i]))
        else:
            _, _, new = runner.generate_timed(ids, max_new_tokens)
            answer = tok.decode(new, skip_special_tokens=True)
            lab = parse_label(answer, words)
            preds.append(labels.index(lab) if lab is not None else -1)
            answers.append(answer)
    return {"preds": preds, "answers": answers, "label_words": words, "method": method,
            "unparseable": sum(p < 0 for p in preds)}
