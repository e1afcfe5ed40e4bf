"""Tokenisation for training: prompt + target + EOS, loss only on the target, little padding.

    ex = encode_example(tok, render_prompt(tok, record, cfg), record.output, max_seq_len=512)
    batches = length_grouped_batches(examples, batch_size=8, seed=0, epoch=0)
    batch = collate([examples[i] for i in batches[0]], pad_id=tok.pad_token_id)   # right padding
    packed = Collator(pad_id, pack=True)([examples[i] for i in batches[0]])       # `data.pack: true`

The prompt is tokenised exactly as at inference (the same string, no extra special tokens) and the
target's tokens follow it, so the model learns to continue precisely the prompt it will be given.
When the pair does not fit `max_seq_len`, the middle of the prompt is cut (its head holds the template
and instruction, its tail the end of the input and the assistant header); the target is never cut.
Packing (`data.pack: true`) concatenates a batch's examples into one row whose `position_ids` restart at 0
for each example (transformers' DataCollatorWithFlattening); with no `attention_mask` and no KV cache,
transformers builds a block-diagonal causal mask from them (masking_utils.find_packed_sequence_indices), so
it works with sdpa/eager on CPU and no example attends to another.

An encoder-decoder model (T5, BART; weaver.models.arch) gets the source and the target as two sequences:

    ex = encode_seq2seq_example(tok, prompt, record.output, max_source_len=512, max_target_len=257)
    batch = Seq2SeqCollator(tok.pad_token_id)([ex, ...])   # input_ids/attention_mask (source), labels (target)

The source is the rendered prompt + EOS (`encode_source`, also what generation encodes), cut in the middle
to `data.max_source_len`; the labels are the target tokens + EOS only, never cut: a target longer than
`data.max_target_len` is an error naming the flag.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from weaver.errors import DataError

IGNORE = -100


def encode_example(tokenizer, prompt: str, target: str, max_seq_len: int) -> dict[str, list[int]]:
    """Token ids and labels for one training pair.

    Args:
        tokenizer: the model's tokenizer (needs an eos token).
        prompt: the rendered prompt (`render_prompt`).
        target: the reference output; EOS is appended.
        max_seq_len: the longest sequence allowed.
    Returns:
        {"input_ids": [...], "labels": [...]} with labels -100 on prompt positions.
    Raises:
        DataError: no EOS token, or the target alone (+EOS and 8 prompt tokens) does not fit max_seq_len.
    """
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token, so training targets cannot be terminated")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    budget = max_seq_len - len(target_ids)
    if budget < min(8, len(prompt_ids)):
        raise DataError(
            f"an output of {len(target_ids) - 1} tokens leaves no room for the prompt in --data.max_seq_len "
            f"{max_seq_len}; raise it or lower --data.max_output_tokens so such records are reported"
        )
    prompt_ids = truncate_middle(prompt_ids, budget)
    return {"input_ids": prompt_ids + target_ids, "labels": [IGNORE] * len(prompt_ids) + list(target_ids)}


def encode_source(tokenizer, prompt: str) -> list[int]:
    """An encoder-decoder model's source ids: the prompt as written (its special tokens parsed) + EOS.

    T5 and BART were pretrained on sources that end in EOS; BART's BOS comes from the plain template
    (weaver.data.chat.render_messages writes the tokenizer's bos_token first).
    """
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ids if ids and ids[-1] == tokenizer.eos_token_id else ids + [tokenizer.eos_token_id]


def encode_seq2seq_example(tokenizer, prompt: str, target: str, max_source_len: int,
                           max_target_len: int) -> dict[str, list[int]]:
    """Source ids and target labels for one encoder-decoder training pair.

    Args:
        tokenizer: the model's tokenizer (needs an eos token).
        prompt: the rendered prompt (plain template: an encoder-decoder tokenizer carries no chat template).
        target: the reference output; EOS is appended.
        max_source_len: the longest source; a longer one loses the middle of its prompt (EOS is kept).
        max_target_len: the longest target (+EOS).
    Returns:
        {"input_ids": source ids, "labels": target ids + EOS}.
    Raises:
        DataError: no EOS token, or a target longer than max_target_len.
    """
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token, so training targets cannot be terminated")
    source = encode_source(tokenizer, prompt)
    labels = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(labels) > max_target_len:
        raise DataError(f"an output of {len(labels) - 1} tokens (+EOS) is longer than --data.max_target_len "
                        f"{max_target_len}; raise it, or lower --data.max_output_tokens so such records are reported")
    if len(source) > max_source_len:
        source = truncate_middle(source[:-1], max_source_len - 1) + source[-1:]
    return {"input_ids": source, "labels": labels}


def truncate_middle(ids: list[int], budget: int) -> list[int]:
    """Keep the first and last budget/2 tokens of ids (all of them when they fit)."""
    if len(ids) <= budget:
        return list(ids)
    head = budget // 2
    return list(ids[:head]) + list(ids[len(ids) - (budget - head):])


def _length(example) -> int:
    return example if isinstance(example, int) else len(example["input_ids"])


def length_grouped_batches(examples: Sequence, batch_size: int, seed: int, epoch: int = 0,
                           mega: int = 50) -> list[list[int]]:
    """Batches of indices whose examples have similar lengths, in a seeded random order.

    Shuffle (seed, epoch), cut into mega-batches of `mega * batch_size`, sort each by length, cut into
    batches, and shuffle the batch order, as transformers' LengthGroupedSampler does.

    Args:
        examples: encoded examples (dicts with input_ids) or their lengths.
        batch_size: examples per batch.
        seed: base seed; epoch: added to the seed so each epoch differs reproducibly.
    Returns:
        A list of index lists covering every example exactly once.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    size = max(1, mega * batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(order), size):
        group = sorted(order[start:start + size], key=lambda i: -_length(examples[i]))
        batches += [group[j:j + batch_size] for j in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded examples into tensors (labels -100 and attention_mask 0 on padding).

    Args:
        examples: dicts with input_ids and labels.
        pad_id: the padding token id.
    Returns:
        {"input_ids", "attention_mask", "labels"}, each LongTensor [batch, longest].
    """
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class Collator:
    """A DataLoader collate function: right-padded batches, or (pack=True) one padding-free packed row.

    Packing uses transformers' DataCollatorWithFlattening: the batch's examples are concatenated into a
    single row, position_ids restart at 0 for each, and labels get -100 at each example's first token.
    There is no attention_mask, so transformers builds a block-diagonal causal mask from the position_ids
    and no example attends to another (tests/data/test_tokenize.py checks the logits against unpacked runs).
    Call the model as `model(**batch, use_cache=False)`: transformers only detects packed rows when no
    cache is in use, and a model left at its default use_cache=True lets examples attend to each other
    (weaver.tuning.step.CausalLMLoss never uses a cache).
    """

    def __init__(self, pad_id: int, pack: bool = False):
        self.pad_id, self.pack = pad_id, pack
        if pack:
            from transformers import DataCollatorWithFlattening

            self._flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not self.pack:
            return collate(examples, self.pad_id)
        return dict(self._flatten([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]))


class Seq2SeqCollator:
    """A DataLoader collate function for encoder-decoder examples: source and labels right-padded apart.

    Returns {"input_ids", "attention_mask"} for the encoder and {"labels"} (-100 on padding) for the
    decoder, which the model shifts right itself (its decoder_start_token_id first).
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        source = collate([{"input_ids": e["input_ids"], "labels": e["input_ids"]} for e in examples], self.pad_id)
        width = max(len(e["labels"]) for e in examples)
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        for row, e in enumerate(examples):
            labels[row, :len(e["labels"])] = torch.tensor(e["labels"])
        return {"input_ids": source["input_ids"], "attention_mask": source["attention_mask"], "labels": labels}


def padding_fraction(batches: Sequence[dict]) -> float:
    """Share of token positions in collated batches that are padding (compute spent on nothing).

    Args:
        batches: outputs of `collate` (attention_mask marks the real tokens) or of a packing Collator
            (no attention_mask: a flattened row holds no padding at all).
    Returns:
        padded positions / all positions, in [0, 1].
    """
    total = real = 0
    for b in batches:
        n = b["input_ids"].numel()
        total += n
        real += int(b["attention_mask"].sum()) if "attention_mask" in b else n
    return 1.0 - real / total if total else 0.0
