"""The transformers backend: a causal or seq2seq LM (plain, peft-wrapped with several adapters, or prefix-tuned).

    backend = TransformersBackend(settings); backend.plan(); backend.load()   # the server: loads by spec
    backend = TransformersBackend.from_model(model, tokenizer)                 # a model already in memory
    backend.generate(rows, BatchParams(repetition_penalty=1.1), adapter=None)

Rows are left-padded into one batch; every new token goes to its row's RowDecoder through a stopping
criterion, which stops finished rows (stop string, limit, cancel, deadline). One decoding definition
(`sampling_kwargs`): the repetition penalty ignores each row's padding, so a prompt gets the same reply
alone or in a batch; then temperature, then top-p. Beam search (num_beams > 1) decodes without streaming
and hands each row its best beam afterwards.

An encoder-decoder model (T5, BART; weaver.models.arch) is decoded by the same path: its sources are
right-padded and end in EOS (weaver.data.tokenize.encode_source), generate runs the encoder once per batch and
the decoder on every row together, and a prompt's n sampled candidates share one encoding.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from weaver.errors import ConfigError
from weaver.generate.rows import Backend, BatchParams, Row, RowDecoder, base_id, resolve_adapter, run_data_config


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
    An encoder-decoder model's prefix (peft's EncoderDecoderCache) is handed over the same way, without
    placeholders: its decoder ids start at the decoder start token (a test checks the scores against the
    teacher-forced logits of training).
    """
    n = virtual_tokens(model)
    if not n:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, pad_token_id=pad_token_id, **kwargs)
    rows = input_ids.shape[0]
    beams = int(kwargs.get("num_beams", 1) or 1)
    expand = beams if beams > 1 else int(kwargs.get("num_return_sequences", 1) or 1)
    cache = model.get_prompt(batch_size=rows * expand)
    if model.config.is_encoder_decoder:  # the prefix is the decoder's cache; the encoder reads the source alone
        return model.get_base_model().generate(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                                               pad_token_id=pad_token_id, **kwargs)
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


def _prompt_groups(rows: list[Row]) -> list[list[Row]]:
    """Rows cut into runs of consecutive rows with the same prompt (a prompt's n candidates)."""
    groups: list[list[Row]] = []
    for row in rows:
        if groups and groups[-1][0].prompt_ids == row.prompt_ids:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _candidate_groups(rows: list[Row]) -> list[list[Row]] | None:
    """Rows as runs of one prompt's candidates when every prompt has the same number n > 1 of them, else None.

    An encoder-decoder model then encodes each source once and samples its n candidates from that encoding
    (generate's num_return_sequences), instead of running the encoder n times.
    """
    groups = _prompt_groups(rows)
    n = len(groups[0])
    return groups if n > 1 and all(len(g) == n for g in groups) else None


class TransformersBackend(Backend):
    """transformers + peft: one copy of the base weights, every adapter loaded by name (multi-adapter)."""

    name = "transformers"

    def plan(self) -> None:
        from weaver.models.loading import check_adapter_set, resolve

        main = resolve(self.settings.model)
        self.base_dir = main.base_dir
        self.adapter_dirs: dict[str, Path] = {}
        served_id = base_id(main.base_spec or self.settings.model)
        if main.adapter_dir is None and main.run_dir is not None:  # a freeze/full run: its own model, its own id
            served_id = Path(main.run_dir).expanduser().resolve().name
        if main.adapter_dir is not None:
            run_id = Path(main.run_dir or main.adapter_dir).expanduser().resolve().name
            self._add_adapter(run_id, main)
        for name, spec in self.settings.adapters.items():
            self._add_adapter(name, resolve_adapter(name, spec, main, self.settings.model))
        check_adapter_set(self.adapter_dirs)
        if served_id in self.model_ids:
            raise ConfigError(f"model id {served_id!r} is used by both the base model and an adapter; "
                              "rename the adapter")
        self.model_ids[served_id] = None
        self.default_model = next(iter(self.model_ids))

    def _add_adapter(self, name: str, res) -> None:
        if name in self.model_ids:
            raise ConfigError(f"model id {name!r} is given twice; choose distinct names with --adapter NAME=RUN")
        self.model_ids[name] = name
        self.adapter_dirs[name] = res.adapter_dir
        data_cfg = run_data_config(res.run_dir)
        if data_cfg is not None:
            self.data_configs[name] = data_cfg

    @classmethod
    def from_model(cls, model, tokenizer) -> TransformersBackend:
        """A backend on a model already in memory (eval, the CLI, the apps): no plan/load, no adapters by name."""
        self = cls(None)
        self._attach(model, tokenizer, is_peft=False)
        return self

    def load(self) -> None:
        from weaver.models.arch import auto_class
        from weaver.models.loading import attach_adapter, load_tokenizer, resolve_dtype

        if not self.model_ids:
            self.plan()
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        tokenizer = load_tokenizer(self.base_dir)
        model = auto_class(self.base_dir).from_pretrained(self.base_dir, dtype=resolve_dtype(self.settings.dtype))
        for i, (name, adapter_dir) in enumerate(self.adapter_dirs.items()):
            if i == 0:
                model = attach_adapter(model, adapter_dir, name)  # peft, or a bottleneck adapter (alone)
            else:
                model.load_adapter(adapter_dir, adapter_name=name)
        self._attach(model.eval(), tokenizer, is_peft=bool(self.adapter_dirs))

    def _attach(self, model, tokenizer, is_peft: bool) -> None:
        from weaver.models.arch import model_is_seq2seq, plain_prompts

        self.model, self.tokenizer, self.is_peft = model, tokenizer, is_peft
        self.seq2seq = model_is_seq2seq(model)
        if self.seq2seq:  # prompts render as the plain template, as in tuning (weaver.models.loading.load_tokenizer)
            plain_prompts(tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.context_window = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {e for e in [*eos, tokenizer.eos_token_id] if e is not None}
        self.n_parallel = 1

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt; an encoder-decoder model's source ends in EOS (as in tuning)."""
        if self.seq2seq:
            from weaver.data.tokenize import encode_source

            return encode_source(self.tokenizer, prompt)
        return super().encode(prompt)

    def _adapter_context(self, adapter: str | None):
        if not self.is_peft:
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def generate(self, rows: list[Row], params: BatchParams, adapter: str | None = None) -> None:
        """Decode the rows together (see the module docstring); every row ends with finish_reason set."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        for row in rows:
            RowDecoder(row, self.tokenizer, self.eos_ids)
        if params.num_beams > 1:
            return self._generate_beams(rows, params, adapter)
        groups = _candidate_groups(rows) if self.seq2seq and params.temperature > 0 else None
        kw = {"num_return_sequences": len(groups[0])} if groups else {}
        input_ids, attention, offsets = self._batch([g[0].prompt_ids for g in groups] if groups else
                                                    [r.prompt_ids for r in rows])

        class _Rows(StoppingCriteria):
            """Feeds each new token to its row and stops rows that are done (stop, limit, cancel, timeout)."""

            def __call__(self, ids, scores, **kwargs):
                done = [r.decoder.push(int(t)) for r, t in zip(rows, ids[:, -1].tolist())]
                return torch.tensor(done, dtype=torch.bool, device=ids.device)

        _, seconds = self._run(params, adapter, input_ids, attention, offsets, max(r.max_new_tokens for r in rows),
                               stopping_criteria=StoppingCriteriaList([_Rows()]), **kw)
        for row in rows:
            row.decoder.finish("length")
        self.count(rows, seconds)

    def _batch(self, prompts: list[list[int]]):
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        if self.seq2seq:  # the encoder's source, right-padded (BART's positions start at its first token); the
            # decoder's ids (what the repetition penalty sees) start at the decoder start token: no offsets
            input_ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts])
            attention = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
            return input_ids, attention, [0] * len(prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        # the columns before each row's first real token: its padding, and a prefix-tuned run's virtual tokens
        return input_ids, attention, [virtual_tokens(self.model) + width - len(p) for p in prompts]

    def _run(self, params: BatchParams, adapter, input_ids, attention, offsets, max_new_tokens: int, **kw):
        """model.generate with the one decoding definition; returns (output ids, seconds)."""
        kw.update(sampling_kwargs(params.repetition_penalty, params.temperature, params.top_p, offsets))
        if params.seed is not None:
            torch.manual_seed(params.seed)
        t0 = time.perf_counter()
        with torch.inference_mode(), self._adapter_context(adapter):
            out = model_generate(  # a prefix-tuned run's virtual tokens are applied there
                self.model, input_ids, attention, self.tokenizer.pad_token_id, max_new_tokens=max_new_tokens,
                eos_token_id=sorted(self.eos_ids), **kw,
            )
        return out, time.perf_counter() - t0

    def _generate_beams(self, rows: list[Row], params: BatchParams, adapter: str | None) -> None:
        """Beam search: rows with the same prompt (a prompt's n candidates) get its n best beams, in order."""
        groups = _prompt_groups(rows)
        n = len(groups[0])
        if any(len(g) != n for g in groups) or n > params.num_beams:
            raise ConfigError("beam search gives each prompt of a batch the same number of candidates, at most "
                              f"num_beams ({params.num_beams})")
        input_ids, attention, offsets = self._batch([g[0].prompt_ids for g in groups])
        ordered = [row for g in groups for row in g]
        out, seconds = self._run(params, adapter, input_ids, attention, offsets, max(r.max_new_tokens for r in rows),
                                 num_beams=params.num_beams, num_return_sequences=n, early_stopping=True)
        new = out[:, 1:] if self.seq2seq else out[:, input_ids.shape[1]:]  # seq2seq: after the decoder start token
        for row, seq in zip(ordered, new.tolist()):
            for token in seq:
                if row.decoder.push(int(token)):
                    break
            row.decoder.finish("length")
        self.count(rows, seconds)
