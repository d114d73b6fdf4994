"""Data for causal-LM fine-tuning: plain-text documents, chat (SFT) examples, and classification-as-instruction.

- `read_documents`: .txt (documents separated by blank lines) or .jsonl with a `text` field.
- `read_sft`: .jsonl rows with `prompt`/`response` or `messages` ([{role, content}], at least one assistant turn).
- `build_messages` / `parse_label`: a labelled row as a one-turn chat whose answer is the label word, and the
  label read back from generated text; `write_instruction` / `read_instruction` keep the template beside a model
  so evaluate scores it on the same prompts.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path
from typing import Any

from llmopt.errors import DataError

INSTRUCTION_FILE = "llmopt_instruction.json"
TEMPLATE_FIELDS = ("text", "labels")  # the named fields an instruction template may use
ROLES = ("system", "user", "assistant")


# ---------------------------------------------------------------- reading


def _jsonl(path: Path) -> list[tuple[int, dict]]:
    from llmopt.data.readers import jsonl_objects

    return jsonl_objects(path)


def read_documents(path: Path) -> list[str]:
    """Documents of a .txt file (separated by blank lines) or of a .jsonl file's `text` field; empty ones dropped."""
    path = Path(path)
    if path.suffix == ".jsonl":
        docs = []
        for i, row in _jsonl(path):
            text = row.get("text")
            if not isinstance(text, str):
                raise DataError(f"{path}:{i}: no string field 'text' (causal_lm reads .jsonl rows like "
                                '{"text": "..."}).')
            docs.append(text)
    else:
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror}).") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text; save it as UTF-8.") from None
        docs = re.split(r"\n[ \t]*\n", raw.replace("\r\n", "\n"))
    docs = [d.strip() for d in docs if d.strip()]
    if not docs:
        raise DataError(f"{path}: no text found.")
    return docs


def read_sft(path: Path) -> list[list[dict]]:
    """Conversations of an SFT .jsonl file: each row `{prompt, response}` or `{messages: [{role, content}]}`."""
    path = Path(path)
    if path.suffix != ".jsonl":
        raise DataError(f"{path}: SFT data must be a .jsonl file with prompt/response or messages rows.")
    out = []
    for i, row in _jsonl(path):
        where = f"{path}:{i}"
        if "messages" in row:
            msgs = row["messages"]
            if not isinstance(msgs, list) or not msgs:
                raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}.")
            for j, m in enumerate(msgs):
                if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                    raise DataError(f"{where}: messages[{j}] must be {{role: {'/'.join(ROLES)}, content: text}}.")
            if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
                raise DataError(f"{where}: no assistant message with content; there is nothing to learn from. "
                                "Add the response as a message with role 'assistant'.")
            out.append([{"role": m["role"], "content": m["content"]} for m in msgs])
            continue
        prompt, response = row.get("prompt"), row.get("response")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: no 'prompt' (each row needs prompt and response, or messages).")
        if not isinstance(response, str) or not response.strip():
            raise DataError(f"{where}: no 'response' for this prompt; add the answer the model should learn.")
        out.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])
    if not out:
        raise DataError(f"{path}: no rows.")
    return out


def hold_out(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded split into (train, dev): `fraction` of the items (at least one, never all) held out."""
    if len(items) < 2:
        raise DataError(f"only {len(items)} example(s): need at least 2 to hold some out for dev; give dev_file.")
    idx = list(range(len(items)))
    random.Random(seed).shuffle(idx)
    k = min(len(items) - 1, max(1, round(fraction * len(items))))
    dev = set(idx[:k])
    return [x for i, x in enumerate(items) if i not in dev], [x for i, x in enumerate(items) if i in dev]


# ---------------------------------------------------------------- classification as instruction


def template_fields(template: str) -> list[str]:
    """The named fields of a str.format template ({text}, {labels}); positional or unknown ones raise ValueError."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown field {{{name}}} in the instruction template; the fields are "
                             + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS) + " (write {{ }} for a literal brace)")
        names.append(name)
    if "text" not in names:
        raise ValueError("the instruction template must contain {text}, where the row's text goes")
    return names


def label_word_map(labels: list[str], label_words: dict[str, str] | None) -> dict[str, str]:
    """label → the word the model answers with (the label itself unless mapped)."""
    words = dict(label_words or {})
    unknown = sorted(set(words) - set(labels))
    if unknown:
        raise DataError(f"instruction.label_words names labels the data does not have: {unknown}; labels: {labels}.")
    out = {lab: str(words.get(lab, lab)) for lab in labels}
    if len({w.lower() for w in out.values()}) < len(out):
        raise DataError(f"instruction.label_words: two labels share an answer word ({out}); make them distinct.")
    return out


def build_messages(row_text: str, instruction: dict[str, Any]) -> list[dict]:
    """The user turn asking for the label of `row_text`: [{"role": "user", "content": template filled}].

    `instruction` is what `read_instruction` returns: {"template": str, "label_words": {label: word}}.
    `{labels}` becomes the answer words in label order joined by ", " (as evaluate's prompt does).
    """
    labels = ", ".join(instruction["label_words"].values())
    return [{"role": "user", "content": instruction["template"].format(text=row_text, labels=labels)}]


def parse_label(generated_text: str, label_words: dict[str, str]) -> str | None:
    """The label whose answer word the generated text gives, or None when it gives none or several.

    Case-insensitive; the word must stand alone (not inside another word). An answer that starts with one
    label word wins; otherwise exactly one label word must occur anywhere.
    """
    text = generated_text.strip().lower()
    found = {}
    for label, word in label_words.items():
        m = re.search(r"(?<!\w)" + re.escape(word.lower()) + r"(?!\w)", text)
        if m:
            found[label] = m.start()
    if not found:
        return None
    first = min(found.values())
    if first == 0 or len(found) == 1:
        starts = [lab for lab, pos in found.items() if pos == first]
        return starts[0] if len(starts) == 1 else None
    return None


def write_instruction(folder: Path, template: str, label_words: dict[str, str]) -> None:
    """Save the template and label words beside a model (llmopt_instruction.json)."""
    from llmopt.fsutil import atomic_write_json

    atomic_write_json(Path(folder) / INSTRUCTION_FILE, {"template": template, "label_words": label_words})


def read_instruction(folder: Path) -> dict[str, Any] | None:
    """The {template, label_words} a model was fine-tuned with, or None when it has no instruction file."""
    path = Path(folder) / INSTRUCTION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        template, words = data["template"], data["label_words"]
        template_fields(template)
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a valid instruction file ({e}).") from None
    if not isinstance(words, dict) or not words:
        raise DataError(f"{path}: label_words must be a non-empty {{label: word}} object.")
    return {"template": template, "label_words": {str(k): str(v) for k, v in words.items()}}
