"""Training tokenisation: loss only on output + EOS, prompt truncated but never the target, batching, packing."""

from __future__ import annotations

import pytest
import torch

from weaver.config import DataConfig
from weaver.data.records import Record
from weaver.data.tasks import render_prompt
from weaver.data.tokenize import (
    IGNORE,
    Collator,
    collate,
    encode_example,
    length_grouped_batches,
    padding_fraction,
    truncate_middle,
)
from weaver.errors import DataError


def test_loss_positions_are_exactly_output_tokens_plus_eos(any_tokenizer):
    tok = any_tokenizer
    rec = Record(id="1", instruction="", input="The cat sat on the mat all day.", output="Cat sits on mat.")
    prompt = render_prompt(tok, rec, DataConfig(task="headline"))
    ex = encode_example(tok, prompt, rec.output, max_seq_len=256)
    supervised = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]
    expected = tok(rec.output, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert supervised == expected
    assert [lab for lab in ex["labels"] if lab != IGNORE] == expected  # labels equal the tokens they sit on
    n_prompt = len(ex["input_ids"]) - len(expected)
    assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert ex["input_ids"][:n_prompt] == tok(prompt, add_special_tokens=False)["input_ids"]


def test_prompt_is_truncated_in_the_middle_never_the_target(tokenizer):
    rec = Record(id="1", instruction="", input="word " * 400 + "THE END", output="A short summary of many words.")
    prompt = render_prompt(tokenizer, rec, DataConfig())
    full = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ex = encode_example(tokenizer, prompt, rec.output, max_seq_len=64)
    target = tokenizer(rec.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(ex["input_ids"]) == 64
    assert ex["input_ids"][-len(target):] == target
    kept = ex["input_ids"][: 64 - len(target)]
    half = len(kept) // 2
    assert kept[:half] == full[:half] and kept[half:] == full[len(full) - (len(kept) - half):]
    assert tokenizer.decode(kept).rstrip().endswith("assistant")  # the reply header survives


def test_target_that_cannot_fit_is_an_error(tokenizer):
    with pytest.raises(DataError, match="raise it or lower --data.max_output_tokens"):
        encode_example(tokenizer, "prompt", "word " * 100, max_seq_len=32)


def test_truncate_middle():
    assert truncate_middle([1, 2, 3], 5) == [1, 2, 3]
    assert truncate_middle(list(range(10)), 4) == [0, 1, 8, 9]
    assert truncate_middle(list(range(10)), 5) == [0, 1, 7, 8, 9]


def _examples(lengths):
    return [{"input_ids": list(range(1, n + 1)), "labels": [IGNORE] * (n // 2) + list(range(n // 2 + 1, n + 1))}
            for n in lengths]


def test_length_grouping_covers_everything_reproducibly_and_pads_less():
    import random

    rng = random.Random(1)
    examples = _examples([rng.randint(5, 300) for _ in range(400)])
    grouped = length_grouped_batches(examples, batch_size=8, seed=3, epoch=0)
    assert sorted(i for b in grouped for i in b) == list(range(400))
    assert grouped == length_grouped_batches(examples, batch_size=8, seed=3, epoch=0)
    assert grouped != length_grouped_batches(examples, batch_size=8, seed=3, epoch=1)
    order = list(range(400))
    rng.shuffle(order)
    unsorted = [order[i:i + 8] for i in range(0, 400, 8)]
    frac = lambda batches: padding_fraction([collate([examples[i] for i in b], pad_id=0) for b in batches])  # noqa: E731
    assert frac(grouped) < 0.1 < frac(unsorted)


def test_collate_right_pads_with_masked_labels():
    batch = collate(_examples([3, 5]), pad_id=7)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 7, 7], [1, 2, 3, 4, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 2, 3, IGNORE, IGNORE], [IGNORE, IGNORE, 3, 4, 5]]
    assert padding_fraction([batch]) == pytest.approx(0.2)


def test_packed_rows_give_the_same_logits_and_loss_as_separate_sequences(tiny_model, tokenizer):
    model, _ = tiny_model
    model.eval()
    texts = [("Summarize: the rain in Spain.", "Rain in Spain."), ("Headline: cats win prize.", "Cats win!"),
             ("Translate: bonjour", "hello")]
    examples = [encode_example(tokenizer, p, t, 64) for p, t in texts]
    packed = Collator(tokenizer.pad_token_id or 0, pack=True)(examples)
    assert set(packed) == {"input_ids", "labels", "position_ids"} and packed["input_ids"].shape[0] == 1
    assert padding_fraction([packed]) == 0.0
    with torch.no_grad():
        packed_logits = model(**packed, use_cache=False).logits[0]
        at = 0
        for ex in examples:
            n = len(ex["input_ids"])
            alone = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
            torch.testing.assert_close(packed_logits[at:at + n], alone, atol=1e-4, rtol=1e-4)
            at += n
        padded = collate(examples, pad_id=tokenizer.pad_token_id or 0)
        loss_padded = model(**padded).loss
        loss_packed = model(**packed, use_cache=False).loss
    torch.testing.assert_close(loss_packed, loss_padded, atol=1e-4, rtol=1e-4)
