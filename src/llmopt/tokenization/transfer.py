"""A small-vocabulary student: the teacher's layers under a domain-trained tokenizer, each new token's embedding
taken from the teacher's vocabulary (the same piece where it has one, else the mean of the rows of the pieces
the teacher's tokenizer cuts the token's text into), so distillation starts from the teacher's knowledge."""

from __future__ import annotations

from typing import Any

from llmopt.tokenization.train import ROLES

MARKS = ("▁", "Ġ")  # word-initial markers of Metaspace / byte-level tokens


def _role_id(base_tok: Any, token: str) -> int | None:
    role = next((r for r, names in ROLES.items() if token in names), None)
    return getattr(base_tok, f"{role}_id", None) if role else None


def transfer_embeddings(base_emb: Any, base_tok: Any, new_tok: Any) -> tuple[Any, dict[str, int]]:
    """(one row per token of `new_tok`, how each row was found: special / same piece / mean of pieces)."""
    import torch

    vocab = base_tok.get_vocab()
    tokens = new_tok.convert_ids_to_tokens(list(range(len(new_tok))))
    rows: list[Any] = [None] * len(tokens)
    todo: list[int] = []
    counts = {"special": 0, "same_piece": 0, "mean_of_pieces": 0}
    for i, t in enumerate(tokens):
        sid = _role_id(base_tok, t)
        initial = t.startswith(MARKS)
        bare = t[1:] if initial else t.removeprefix("##")
        cont = t.startswith("##") or not (initial or t.startswith("<0x"))
        hit = sid if sid is not None else next((vocab[k] for k in (t, ("##" + bare) if cont else bare) if k in vocab),
                                               None)
        if hit is not None:
            rows[i] = base_emb[hit]
            counts["special" if sid is not None else "same_piece"] += 1
        else:
            todo.append(i)
    if todo:
        texts = [new_tok.convert_tokens_to_string([tokens[i]]).strip() or tokens[i] for i in todo]
        for i, ids in zip(todo, base_tok(texts, add_special_tokens=False)["input_ids"]):
            rows[i] = base_emb[ids or [base_tok.unk_token_id]].mean(0)
        counts["mean_of_pieces"] = len(todo)
    return torch.stack(rows), counts


def small_vocab_student(teacher: Any, layers: list[int], teacher_tok: Any, new_tok: Any) -> tuple[Any, dict]:
    """The teacher's `layers` (embeddings, head copied) with its embedding matrix replaced by one for `new_tok`."""
    import torch

    from llmopt.compression.distillation import student_from_teacher

    student = student_from_teacher(teacher, layers)
    with torch.no_grad():
        emb, counts = transfer_embeddings(student.get_input_embeddings().weight.detach(), teacher_tok, new_tok)
        student.resize_token_embeddings(len(new_tok), mean_resizing=False)
        student.get_input_embeddings().weight.copy_(emb)
    student.config.pad_token_id = new_tok.pad_token_id
    return student, counts
