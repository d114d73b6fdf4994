"""A small-vocabulary student: rows carried over from the teacher's vocabulary, by hand on a few tokens."""

import torch

from llmopt.models import load_classifier, load_tokenizer
from llmopt.tokenization.config import TokenizerTrainConfig
from llmopt.tokenization.train import save_tokenizer, train_tokenizer
from llmopt.tokenization.transfer import small_vocab_student

CORPUS = ["the film was funny and the acting was warm", "a dull , boring film with no heart"] * 20


def test_student_rows_come_from_the_teacher_vocabulary(tmp_path, tiny_bert):
    from transformers import AutoTokenizer

    cfg = TokenizerTrainConfig(vocab_size=300, min_frequency=1, lowercase=True)
    new = AutoTokenizer.from_pretrained(str(save_tokenizer(train_tokenizer(CORPUS, cfg), cfg.special_tokens,
                                                           tmp_path / "t")))
    teacher, t_tok = load_classifier(tiny_bert), load_tokenizer(tiny_bert)
    student, how = small_vocab_student(teacher, [1], t_tok, new)
    assert student.config.vocab_size == len(new) and student.config.num_hidden_layers == 1
    assert sum(how.values()) == len(new) and how["special"] == 5
    emb, t_emb = student.get_input_embeddings().weight, teacher.get_input_embeddings().weight
    v = t_tok.get_vocab()
    assert torch.equal(emb[new.convert_tokens_to_ids("▁film")], t_emb[v["film"]])       # word-initial piece
    assert torch.equal(emb[new.cls_token_id], t_emb[t_tok.cls_token_id])                  # special by role
    # a byte piece has no text of its own in the teacher's vocabulary: the mean of what the teacher makes of it
    b = new.convert_tokens_to_ids("<0x41>")
    assert torch.allclose(emb[b], t_emb[t_tok("A", add_special_tokens=False)["input_ids"]].mean(0))
    with torch.no_grad():  # it runs on the new ids
        assert student(**new(["a funny film"], return_tensors="pt")).logits.shape == (1, 2)
