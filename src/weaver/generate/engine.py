"""The generation engine shared by `weaver generate`, eval, serve and the apps.

    gen = Generator(model, tokenizer)
    outs = gen.generate(["prompt 1", "prompt 2"], SamplingParams(max_new_tokens=48))
    for piece in gen.stream("prompt", SamplingParams()):
        print(piece, end="")

Prompts are already-rendered strings (see weaver.data.chat.render_messages). Batches are left-padded
and sorted by length so little compute is spent on padding; results come back in input order. The
repetition penalty ignores pad positions, so a prompt gets the same greedy reply alone or in a batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

GREEDY_BELOW = 1e-5
"""Temperatures below this decode greedily, as vLLM does: logits divided by a tiny temperature (1e-45, 5e-324)
overflow to inf and sampling fails, while any temperature this small already picks the most likely token."""


def effective_temperature(temperature: float) -> float:
    """The temperature to decode with: 0.0 (greedy) below GREEDY_BELOW, else unchanged."""
    return 0.0 if temperature < GREEDY_BELOW else temperature


@dataclass
class SamplingParams:
    """Decoding settings for one request (a temperature below GREEDY_BELOW becomes 0.0: greedy)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        self.temperature = effective_temperature(self.temperature)


@dataclass
class Completion:
    """One generated text and its accounting."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) | "length"


class _RepetitionPenalty:
    """HF's repetition penalty (CTRL paper), but blind to each row's left padding.

    transformers' own processor penalises every token id in the row, pad tokens included, so a padded
    prompt would be decoded differently from the same prompt alone. `offsets[i]` is the pad width of
    batch row i; rows expanded for beams or n candidates map back to their prompt by integer division.
    """

    def __init__(self, penalty: float, offsets: list[int]):
        self.penalty = penalty
        self.offsets = torch.tensor(offsets)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        factor = input_ids.shape[0] // len(self.offsets)
        start = self.offsets.repeat_interleave(factor).unsqueeze(1)
        ids = input_ids.clone()
        pad_pos = torch.arange(ids.shape[1]).unsqueeze(0) < start
        first_real = ids.gather(1, start.clamp(max=ids.shape[1] - 1))
        ids = torch.where(pad_pos, first_real, ids)  # pads replaced by a token the row already has
        picked = scores.gather(1, ids)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(1, ids, picked)


def virtual_tokens(model) -> int:
    """How many virtual tokens a prefix-tuned peft model puts before every prompt (0 for any other model)."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or getattr(model, "_adapters_disabled", False) or cfg.peft_type != "PREFIX_TUNING":
        return 0
    return int(cfg.num_virtual_tokens)


def model_generate(model, input_ids, attention_mask, pad_token_id: int, **kwargs):
    """`model.generate(...)`, except that a prefix-tuned peft model's prefix is really applied.

    peft 0.21's generate hands the prefix to transformers as `past_key_values`, which transformers 5.24's
    generate replaces with its own empty cache: the reply silently equals the base model's (measured on the
    tiny test model). Here the base model generates from a cache prefilled with the virtual tokens' keys and
    values, with one attended placeholder column per virtual token so that positions start after them, as
    in training; the placeholders are cut from the returned ids. Logits processors see those columns.
    """
    n = virtual_tokens(model)
    if not n:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, pad_token_id=pad_token_id, **kwargs)
    rows = input_ids.shape[0]
    beams = int(kwargs.get("num_beams", 1) or 1)
    expand = beams if beams > 1 else int(kwargs.get("num_return_sequences", 1) or 1)
    cache = model.get_prompt(batch_size=rows * expand)
    input_ids = torch.cat([torch.full((rows, n), pad_token_id, dtype=input_ids.dtype), input_ids], dim=1)
    attention_mask = torch.cat([torch.ones((rows, n), dtype=attention_mask.dtype), attention_mask], dim=1)
    out = model.get_base_model().generate(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                                          pad_token_id=pad_token_id, **kwargs)
    return out[:, n:]


def sampling_kwargs(repetition_penalty: float, temperature: float, top_p: float, offsets: list[int]) -> dict:
    """`generate` kwargs for the one decoding definition every transformers path uses (CLI, eval, server).

    Our processors run in this order: the padding-blind repetition penalty, then temperature, then top-p
    (transformers appends custom processors after its own, so temperature and top-p are ours too).
    `offsets[i]` is the number of columns before row i's first real token (left padding, prefix tokens).
    """
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    kw: dict = {"do_sample": temperature > 0}
    procs = []
    if repetition_penalty != 1.0:
        procs.append(_RepetitionPenalty(repetition_penalty, offsets))
    if temperature > 0:
        kw["top_k"] = 0
        procs.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p))
    if procs:
        kw["logits_processor"] = LogitsProcessorList(procs)
    return kw


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Generator:
    """Batched generation on a transformers causal LM (plain or PEFT-wrapped)."""

    def __init__(self, model, tokenizer, batch_size: int = 8):
        self.model = model
        self.tok = tokenizer
        self.batch_size = batch_size
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.stats = {"prompts": 0, "new_tokens": 0, "seconds": 0.0}

    def _gen_kwargs(self, p: SamplingParams, offsets: list[int]) -> dict:
        kw = {
            "max_new_tokens": p.max_new_tokens,
            "num_beams": p.num_beams,
            "num_return_sequences": p.n,
            "pad_token_id": self.tok.pad_token_id,
            "eos_token_id": self.tok.eos_token_id,
            **sampling_kwargs(p.repetition_penalty, p.temperature, p.top_p, offsets),
        }
        if p.stop:
            kw.update(stop_strings=list(p.stop), tokenizer=self.tok)
        return kw

    @torch.inference_mode()
    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Callable[[int], None] | None = None
    ) -> list[list[Completion]]:
        """Generate `params.n` completions for each prompt.

        Args:
            prompts: rendered prompt strings.
            params: decoding settings.
            progress: called with the number of prompts finished after each batch.
        Returns:
            For each prompt (in input order), a list of n Completions.
        """
        if params.seed is not None:
            torch.manual_seed(params.seed)
        encoded = [self.tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[list[Completion]] = [[] for _ in prompts]
        bs = max(1, self.batch_size // max(1, params.n))
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            self._run_batch([encoded[i] for i in idx], idx, params, results)
            if progress:
                progress(len(idx))
        return results

    def _run_batch(self, batch_ids, idx, params: SamplingParams, results) -> None:
        width = max(len(x) for x in batch_ids)
        n_virtual = virtual_tokens(self.model)  # prefix tuning's placeholder columns count as padding here
        kw = self._gen_kwargs(params, [n_virtual + width - len(x) for x in batch_ids])
        pad = kw.pop("pad_token_id")
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch_ids])
        attn = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch_ids])
        t0 = time.perf_counter()
        out = model_generate(self.model, input_ids, attn, pad, **kw)
        self.stats["seconds"] += time.perf_counter() - t0
        new = out[:, width:]
        for row, seq in enumerate(new):
            i = idx[row // params.n]
            ids = seq.tolist()
            n_tok = len(ids)
            ended = False
            if self.tok.eos_token_id in ids:
                n_tok = ids.index(self.tok.eos_token_id)
                ended = True
            while n_tok and ids[n_tok - 1] == pad and not ended:
                n_tok -= 1
            text = self.tok.decode(ids[:n_tok], skip_special_tokens=True)
            text, stopped = _cut_at_stop(text, params.stop)
            self.stats["new_tokens"] += n_tok
            self.stats["prompts"] += 1
            reason = "stop" if (ended or stopped or n_tok < params.max_new_tokens) else "length"
            results[i].append(Completion(text.strip(), len(batch_ids[row // params.n]), n_tok, reason))

    def stream(self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply to one prompt piece by piece as it is generated.

        Args:
            prompt: rendered prompt string.
            params: decoding settings (n is ignored: one stream).
            cancel: set it to stop generation early (e.g. a client disconnected).
        """
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return bool(cancel is not None and cancel.is_set())

        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        ids = self.tok(prompt, add_special_tokens=False, return_tensors="pt")
        kw = self._gen_kwargs(params, [virtual_tokens(self.model)])
        kw["num_return_sequences"] = 1
        pad = kw.pop("pad_token_id")
        if params.seed is not None:
            torch.manual_seed(params.seed)
        errors: list[BaseException] = []

        def work():
            try:
                with torch.inference_mode():
                    model_generate(self.model, ids["input_ids"], ids["attention_mask"], pad, streamer=streamer,
                                   stopping_criteria=StoppingCriteriaList([_Cancel()]), **kw)
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        emitted = ""
        for piece in streamer:
            candidate = emitted + piece
            cut, stopped = _cut_at_stop(candidate, params.stop)
            if cut[len(emitted) :]:
                yield cut[len(emitted) :]
            emitted = cut
            if stopped:
                if cancel is not None:
                    cancel.set()
                break
        thread.join()
        if errors:
            raise errors[0]
