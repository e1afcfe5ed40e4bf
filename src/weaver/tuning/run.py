"""`tune(cfg) -> run directory`: the whole fine-tuning stage, top to bottom.

    from weaver.config import load_config
    from weaver.tuning.run import tune
    run_dir = tune(load_config("configs/dialogsum-smollm2.yaml", ["--train.max_minutes", "5"]))

Setup (seed, model, data, method), the loop (weaver.tuning.loop.Trainer), then the run directory:
config.yaml, versions.json, metrics.jsonl, run.json, adapter/ (or model/ for freeze/full), best/,
checkpoints/, tb/. The same function runs under `accelerate launch` / `torchrun` (data parallel, or sharded
with train.distributed fsdp).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import Counter
from pathlib import Path

from weaver.config import RunConfig, save_resolved
from weaver.errors import ConfigError, WeaverError
from weaver.files import atomic_write_text
from weaver.tuning.callbacks import TrainingDiverged
from weaver.tuning.loop import TrainData, Trainer, plan_steps
from weaver.tuning.step import choose_precision, peak_rss_mb

log = logging.getLogger(__name__)


def prompt_instruction(records, data_cfg) -> str:
    """The instruction most prompts were rendered with (serving reuses it)."""
    from weaver.data.tasks import task_instruction

    if data_cfg.task == "custom":
        return data_cfg.template or ""
    if data_cfg.instruction:
        return data_cfg.instruction
    counts = Counter(r.instruction.strip() or task_instruction(data_cfg) for r in records)
    return counts.most_common(1)[0][0] if counts else task_instruction(data_cfg)


def prepare_data(cfg: RunConfig, tokenizer, seq2seq: bool = False) -> tuple[TrainData, dict]:
    """Load the splits and encode them with the one prompt renderer (weaver.data).

    Args:
        seq2seq: the model is an encoder-decoder (weaver.models.arch): source and target are encoded apart
            (weaver.data.tokenize.encode_seq2seq_example, data.max_source_len / data.max_target_len).
    Returns:
        (TrainData for the loop, the splits report with the instruction used).
    Raises:
        ConfigError / DataError: from weaver.data (missing file, malformed records), or a setting that does not
            fit the model's kind (max_source_len on a decoder-only model; pack or dpo on an encoder-decoder).
    """
    from weaver.data.splits import load_splits
    from weaver.data.tasks import render_prompt
    from weaver.data.tokenize import Collator, Seq2SeqCollator, encode_example, encode_seq2seq_example
    from weaver.tuning.backtranslate import backtranslate

    max_source, max_target = cfg.data.seq2seq_limits(seq2seq)
    if seq2seq:
        _refuse_for_seq2seq(cfg)
    if cfg.train.objective == "dpo":
        return _prepare_pairs(cfg, tokenizer)
    splits = load_splits(cfg.data, tokenizer, translate=backtranslate)  # backtranslate generates: a tuning step
    if not splits.train:
        raise ConfigError(f"no training records left in {cfg.data.train} after splitting and de-duplication")

    def encode(records):
        prompts = [render_prompt(tokenizer, r, cfg.data) for r in records]
        if seq2seq:
            return [encode_seq2seq_example(tokenizer, p, r.output, max_source, max_target)
                    for p, r in zip(prompts, records)]
        return [encode_example(tokenizer, p, r.output, cfg.data.max_seq_len) for p, r in zip(prompts, records)]

    train = encode(splits.train)
    collate = Seq2SeqCollator(tokenizer.pad_token_id) if seq2seq else Collator(tokenizer.pad_token_id,
                                                                                 pack=cfg.data.pack)
    data = _train_data(cfg, tokenizer, train, train, encode(splits.dev), splits.dev, collate)
    data.seq2seq = seq2seq
    report = {**splits.report, "instruction": prompt_instruction(splits.train, cfg.data)}
    return data, report


def _refuse_for_seq2seq(cfg: RunConfig) -> None:
    """Settings an encoder-decoder model cannot take, refused with the flag to change.

    Raises:
        ConfigError: data.pack, train.objective dpo, or a decoder-only method / block selection.
    """
    t = cfg.train
    if cfg.data.pack:
        raise ConfigError("data.pack packs decoder-only sequences; an encoder-decoder model (T5, BART) trains on "
                          "padded source/target batches: set data.pack to false")
    if t.objective == "dpo":
        raise ConfigError("train.objective dpo is implemented for decoder-only models; an encoder-decoder model "
                          "(T5, BART) tunes with train.objective sft")
    if t.method in ("adapter", "freeze"):
        raise ConfigError(f"train.method {t.method} picks decoder-only blocks; for an encoder-decoder model (T5, "
                          "BART) use lora, adalora, ia3, prefix or full")
    if t.layers is not None or t.top_layers is not None:
        raise ConfigError("train.layers / train.top_layers number the blocks of a decoder-only model; an "
                          "encoder-decoder model (T5, BART) has two stacks: drop them (all blocks are adapted)")


def _prepare_pairs(cfg: RunConfig, tokenizer) -> tuple[TrainData, dict]:
    """prepare_data for train.objective dpo: preference pairs, each side encoded after the same prompt."""
    from weaver.data.preferences import encode_pair, load_pair_splits
    from weaver.data.tasks import render_prompt
    from weaver.tuning.dpo import PairCollator

    if cfg.data.pack:
        raise ConfigError("data.pack does not work with train.objective dpo (each reply's log-probability is summed "
                          "per padded row); set data.pack to false")
    splits = load_pair_splits(cfg.data, tokenizer)
    if not splits.train:
        raise ConfigError(f"no training pairs left in {cfg.data.train} after splitting and de-duplication")

    def encode(pairs):
        return [encode_pair(tokenizer, render_prompt(tokenizer, p.record, cfg.data), p, cfg.data.max_seq_len)
                for p in pairs]

    train = encode(splits.train)
    lengths = [max(len(e["chosen"]["input_ids"]), len(e["rejected"]["input_ids"])) for e in train]
    dev_records = [p.record for p in splits.dev]  # the chosen reply is each prompt's reference for rougeL
    data = _train_data(cfg, tokenizer, train, lengths, encode(splits.dev), dev_records,
                       PairCollator(tokenizer.pad_token_id))
    report = {**splits.report, "instruction": prompt_instruction([p.record for p in splits.train], cfg.data)}
    return data, report


def _train_data(cfg: RunConfig, tokenizer, train: list, lengths: list, dev: list, dev_records: list,
                collate) -> TrainData:
    """TrainData with length-grouped (or seeded random) batches and the rougeL dev prompts."""
    from weaver.data.tasks import get_task, render_prompt
    from weaver.data.tokenize import length_grouped_batches

    t = cfg.train
    if t.group_by_length:
        def batches(epoch):
            return length_grouped_batches(lengths, t.batch_size, t.seed, epoch)
    else:
        import random

        def batches(epoch):
            order = list(range(len(train)))
            random.Random(t.seed * 1_000_003 + epoch).shuffle(order)
            return [order[i : i + t.batch_size] for i in range(0, len(order), t.batch_size)]

    task = get_task(cfg.data.task)
    n_rouge = t.rouge_samples if t.metric == "rougeL" else 0
    return TrainData(
        train=train, batches=batches, collate=collate, dev=dev,
        dev_prompts=[render_prompt(tokenizer, r, cfg.data) for r in dev_records[:n_rouge]],
        dev_refs=[[r.output, *r.references] for r in dev_records[:n_rouge]],
        lang=cfg.data.lang, max_new_tokens=cfg.generate.max_new_tokens or task.max_new_tokens, stop=list(task.stop),
    )


def load_base(cfg: RunConfig):
    """(fp32 model, tokenizer, the resolved model spec) of cfg.model.name for training.

    A decoder-only folder loads as AutoModelForCausalLM, an encoder-decoder one as AutoModelForSeq2SeqLM
    (weaver.models.arch).

    A tuned run is accepted only with train.objective dpo, which continues its adapter (continue_adapter).
    """
    import torch

    from weaver.models.arch import auto_class
    from weaver.models.loading import load_tokenizer, resolve

    resolved = resolve(cfg.model.name)
    if resolved.adapter_dir is not None and cfg.train.objective == "sft":
        raise ConfigError(f"model.name {cfg.model.name} is a tuned run: tune from its base {resolved.base_spec!r}")
    tok = load_tokenizer(resolved)  # an encoder-decoder model's has no chat template: plain prompts
    model = auto_class(resolved.base_dir).from_pretrained(resolved.base_dir, dtype=torch.float32,
                                                          **nf4_loading(cfg.train))
    model.config.use_cache = False
    return model, tok, resolved


def nf4_loading(train) -> dict:
    """from_pretrained's extra arguments for train.frozen_dtype nf4 (QLoRA's 4-bit base), else none.

    The Linear layers of the blocks become bitsandbytes Linear4bit (NF4 blocks of 64, computing in bf16 under bf16
    autocast, else fp32); embeddings, the LM head and norms stay fp32.
    Raises:
        ConfigError: bitsandbytes is not installed.
    """
    if train.frozen_dtype != "nf4":
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("--train.frozen_dtype nf4 needs bitsandbytes: pip install 'weaver[quant4]' "
                          "(or set --train.frozen_dtype auto)") from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision, _ = choose_precision(train.precision, device)
    compute = torch.bfloat16 if precision == "bf16" else torch.float32
    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_compute_dtype=compute),
            "device_map": {"": "cpu" if device.type == "cpu" else int(os.environ.get("LOCAL_RANK", 0))}}


def continue_adapter(model, resolved, train):
    """The base model with a tuned run's adapter attached, trainable (train.objective dpo from an SFT run).

    Raises:
        ConfigError: train.method differs from the method that made the adapter.
    """
    from weaver.models.loading import adapter_kind, attach_adapter

    if resolved.method != train.method:
        raise ConfigError(f"model.name {resolved.run_dir} holds a {resolved.method} adapter, which DPO continues: set "
                          f"--train.method {resolved.method}")
    if adapter_kind(resolved.adapter_dir) == "BOTTLENECK":
        from weaver.models.bottleneck import ATTR

        model = attach_adapter(model, resolved.adapter_dir)
        for name, p in model.named_parameters():
            p.requires_grad_(f".{ATTR}." in name)
        return model.train()
    from peft import PeftModel

    return PeftModel.from_pretrained(model, resolved.adapter_dir, is_trainable=True)


def tune(cfg: RunConfig) -> Path:
    """Fine-tune cfg.model.name on cfg.data with cfg.train.method and write the run directory.

    Args:
        cfg: the resolved run configuration.
    Returns:
        The run directory (cfg.train.out_dir).
    Raises:
        ConfigError / DataError: bad settings or data. TrainingDiverged: NaN/inf loss (last good
        checkpoint kept).
    """
    from weaver.tuning.run_dir import RunFolder

    run_dir = Path(cfg.train.out_dir)
    acc = _accelerator()
    if cfg.train.distributed == "fsdp":  # before the run folder is touched
        from weaver.tuning.sharded import check_launch

        check_launch(acc, acc.num_processes)
    folder = RunFolder.open(cfg) if acc.is_main_process else None  # checks; creates; deletes nothing
    acc.wait_for_everyone()
    try:
        trainer, facts = _setup(cfg, acc, folder)
    except BaseException:
        if folder is not None:  # nothing trained yet: leave the folder as it was before this run
            folder.discard()
        raise
    try:
        summary = trainer.run()
    except TrainingDiverged:
        if acc.is_main_process:
            _write_run_json(run_dir, {**facts, **trainer.summary("nan")})
        raise
    if acc.is_main_process:
        _write_run_json(run_dir, {**facts, **summary})
        _after_tune(cfg, run_dir)
    acc.wait_for_everyone()
    return run_dir


SHARD_ON_CPU = ("on CPUs Weaver shards the model itself: torchrun --nproc_per_node 2 -m weaver.cli tune CONFIG "
                "--train.distributed fsdp (or train data-parallel: accelerate launch --config_file "
                "configs/accelerate/multi-cpu.yaml)")


def _accelerator():
    """The Accelerator of this launch (processes, device); an accelerate FSDP/DeepSpeed config it cannot honour refused.

    Raises:
        ConfigError: accelerate's FSDP or DeepSpeed on a machine without a GPU: accelerate 1.15 refuses FSDP there,
            and sets a DeepSpeed config aside (it would train data-parallel while the user asked for ZeRO).
    """
    import torch
    from accelerate import Accelerator

    def asked(plugin: str) -> bool:
        return os.environ.get(f"ACCELERATE_USE_{plugin}", "").lower() in ("1", "true")

    try:
        acc = Accelerator(cpu=not torch.cuda.is_available())
    except RuntimeError as exc:
        if asked("FSDP") and "no available devices" in str(exc):
            raise ConfigError("accelerate's FSDP needs a GPU (or another accelerator) and this machine has none; "
                              f"{SHARD_ON_CPU}") from None
        raise
    if asked("DEEPSPEED") and acc.distributed_type.name != "DEEPSPEED":
        raise ConfigError("accelerate's DeepSpeed needs a GPU here (without one accelerate sets the DeepSpeed config "
                          f"aside and would train data-parallel); {SHARD_ON_CPU}")
    return acc


def _setup(cfg: RunConfig, acc, folder) -> tuple[Trainer, dict]:
    """Model, data, method and the Trainer; only then (--fresh) the previous run's outputs are deleted.

    Returns:
        (the Trainer, the run facts for run.json).
    """
    from accelerate.utils import set_seed

    from weaver.models.arch import model_is_seq2seq
    from weaver.tuning.methods import build_trainable, enable_checkpointing, trainable_summary

    run_dir = Path(cfg.train.out_dir)
    set_seed(cfg.train.seed)
    model, tok, resolved = load_base(cfg)
    data, report = prepare_data(cfg, tok, seq2seq=model_is_seq2seq(model))
    _, total = plan_steps(len(data.batches(0)), acc.num_processes, cfg.train)
    if resolved.adapter_dir is not None:
        model = continue_adapter(model, resolved, cfg.train)
        data.reference_adapter = True  # the reference is the run's adapter as loaded: the SFT policy
    else:
        model = build_trainable(model, cfg.train, total_steps=total)
    checkpointed = enable_checkpointing(model) if cfg.train.gradient_checkpointing else 0
    if folder is not None:
        folder.clear_previous()
        folder.write_manifest()
    acc.wait_for_everyone()
    trainer = Trainer(model, tok, data, cfg, run_dir, accelerator=acc)
    facts = {"method": cfg.train.method, "objective": cfg.train.objective, "base_model": cfg.model.name,
             "architecture": (model.config.architectures or [type(model).__name__])[0],
             "model_kind": "seq2seq" if data.seq2seq else "causal",
             **trainable_summary(model),
             "checkpointed_blocks": checkpointed,
             "instruction": report["instruction"], "data": {k: report.get(k) for k in ("counts", "fingerprint")}}
    if acc.is_main_process:
        save_resolved(cfg, run_dir, extra={"data_fingerprint": report.get("fingerprint")})
    return trainer, facts


def _write_run_json(run_dir: Path, facts: dict) -> None:
    facts["peak_rss_mb"] = peak_rss_mb()
    atomic_write_text(run_dir / "run.json", json.dumps(facts, indent=2, default=str) + "\n")


def _after_tune(cfg: RunConfig, run_dir: Path) -> None:
    """eval.after_tune: compare base vs tuned with weaver.eval.runner.evaluate."""
    if not cfg.eval.after_tune:
        return
    try:
        from weaver.eval.runner import evaluate
    except ImportError:
        raise WeaverError(
            f"tuning finished ({run_dir}) but eval.after_tune needs weaver.eval.runner, which is not installed; "
            f"run `weaver eval` later"
        ) from None
    eval_cfg = copy.deepcopy(cfg)
    eval_cfg.eval.base = eval_cfg.eval.base or cfg.model.name
    eval_cfg.model.name = str(run_dir)
    evaluate(eval_cfg)
