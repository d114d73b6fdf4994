"""Causal-LM training pieces on the tiny Llama: packing, SFT masking and truncation, collator, LoRA merge."""

import pytest

from llmopt.errors import ModelError
from llmopt.training import causal
from llmopt.training.causal import IGNORE


@pytest.fixture(scope="module")
def tok(tiny_llama):
    from llmopt.llm import load_chat_tokenizer

    return load_chat_tokenizer(tiny_llama, need_chat_template=True)


def test_packing_puts_eos_between_documents_and_cuts_blocks(tok):
    docs = ["the cat sat", "on the mat today", "dogs bark"]
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    stream = ids[0] + [tok.eos_token_id] + ids[1] + [tok.eos_token_id] + ids[2] + [tok.eos_token_id]
    blocks = causal.pack_documents(tok, docs, block_size=4)
    assert [b["input_ids"] for b in blocks] == [stream[i:i + 4] for i in range(0, len(stream), 4)
                                                if len(stream[i:i + 4]) >= 2]
    assert all(b["labels"] == b["input_ids"] and b["attention_mask"] == [1] * len(b["input_ids"]) for b in blocks)
    assert sum(len(b["input_ids"]) for b in blocks) >= len(stream) - 1


def test_sft_labels_mask_exactly_the_prompt(tok):
    msgs = [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "Four, of course."}]
    ids, labels = causal.encode_chat(tok, msgs)
    prompt = tok(tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    response = tok("Four, of course.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ids[:len(prompt)] == prompt  # the model sees the prompt exactly as at generation time
    assert labels[:len(prompt)] == [IGNORE] * len(prompt)
    learnt = [x for x in labels if x != IGNORE]
    assert learnt == response  # the answer and its closing <|im_end|>, nothing else
    assert tok.decode(learnt) == "Four, of course.<|im_end|>"
    # the full rendering is what the tokens spell
    assert tok.decode(ids) == tok.apply_chat_template(msgs, tokenize=False)


def test_multi_turn_learns_every_assistant_turn_only(tok):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"}, {"role": "assistant", "content": "goodbye"}]
    ids, labels = causal.encode_chat(tok, msgs)
    assert tok.decode([x for x in labels if x != IGNORE]) == "hello<|im_end|>goodbye<|im_end|>"
    assert len(ids) == len(labels)


def test_truncation_cuts_the_prompt_from_the_left_and_counts(tok):
    long = {"role": "user", "content": "word " * 200}
    convs = [[long, {"role": "assistant", "content": "short answer"}],
             [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    n = len(causal.encode_chat(tok, convs[1])[0]) + 2  # the short conversation fits
    enc = causal.encode_sft(tok, convs, max_length=n)
    assert enc.truncated == 1 and enc.response_cut == 0 and enc.notes
    first = enc.examples[0]
    assert len(first["input_ids"]) == n
    assert tok.decode([x for x in first["labels"] if x != IGNORE]) == "short answer<|im_end|>"
    full_ids, _ = causal.encode_chat(tok, convs[0])
    assert first["input_ids"] == full_ids[len(full_ids) - n - 1:len(full_ids) - 1]  # left cut; the trailing \n dropped
    assert enc.examples[1]["input_ids"] == causal.encode_chat(tok, convs[1])[0]
    tiny = causal.encode_sft(tok, convs[:1], max_length=2)  # the response (3 tokens with <|im_end|>) is longer: its start stays
    assert tiny.response_cut == 1 and tok.decode(tiny.examples[0]["labels"]) == "short answer"


def test_collator_pads_ids_with_pad_and_labels_with_ignore():
    col = causal.CausalCollator(pad_token_id=7)
    batch = col([{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": [-100, 2, 3]},
                 {"input_ids": [4], "attention_mask": [1], "labels": [4]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]


def test_lora_merge_gives_the_adapter_model_logits(tiny_llama):
    import torch

    from llmopt.llm import load_causal_lm

    model = causal.add_lora(load_causal_lm(tiny_llama), r=4, alpha=8, dropout=0.0,
                            target_modules=["q_proj", "v_proj", "down_proj"])
    torch.manual_seed(1)
    with torch.no_grad():  # lora_B starts at zero: make the adapters do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    x = torch.tensor([[1, 50, 300, 7, 99, 1000]])
    with torch.no_grad():
        adapted = model(input_ids=x).logits
        with model.disable_adapter():
            plain = model(input_ids=x).logits
        merged = causal.merge_lora(model)
        merged_logits = merged(input_ids=x).logits
    assert not torch.allclose(adapted, plain, atol=1e-3)  # the adapters change the output
    torch.testing.assert_close(merged_logits, adapted, atol=1e-5, rtol=1e-5)
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_lora_target_that_matches_nothing_names_it_and_lists_the_linears(tiny_llama):
    from llmopt.llm import load_causal_lm

    with pytest.raises(ModelError, match=r"'qkv_proj' match\(es\) no Linear module.*down_proj, gate_proj, k_proj"):
        causal.add_lora(load_causal_lm(tiny_llama), 4, 8, 0.0, ["q_proj", "qkv_proj"], where="finetune 'ft': lora")


def test_trainable_parameters_of_lora_are_the_adapters(tiny_llama):
    from llmopt.llm import load_causal_lm

    base = load_causal_lm(tiny_llama)
    full = causal.trainable_parameters(base)
    assert full["trainable_params"] == full["total_params"]
    lora = causal.trainable_parameters(causal.add_lora(base, 2, 4, 0.0, ["q_proj"]))
    # q_proj is 32x32 in 2 layers: A (2x32) + B (32x2) each
    assert lora["trainable_params"] == 2 * (2 * 32 + 32 * 2)


def test_mean_nll_is_token_weighted_over_labelled_tokens(tiny_llama):
    import math

    import torch

    from llmopt.llm import load_causal_lm

    model = load_causal_lm(tiny_llama)
    a = {"input_ids": [5, 6, 7, 8, 9], "attention_mask": [1] * 5, "labels": [IGNORE, IGNORE, 7, 8, 9]}
    b = {"input_ids": [10, 11], "attention_mask": [1, 1], "labels": [10, 11]}
    by_hand = []
    with torch.no_grad():
        for e in (a, b):  # Hugging Face's own loss of one example is the mean over its labelled next tokens
            out = model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]]))
            n = sum(1 for x in e["labels"][1:] if x != IGNORE)
            by_hand.append((float(out.loss) * n, n))
    want = sum(s for s, _ in by_hand) / sum(n for _, n in by_hand)  # 3 tokens of a, 1 of b
    got = causal.mean_nll(model, [a, b], pad_token_id=0, batch_size=2)  # padded together in one batch
    assert got["tokens"] == 4
    assert got["loss"] == pytest.approx(want, rel=1e-5) and got["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
    assert not model.training
