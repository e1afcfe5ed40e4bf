"""Run configuration: one dataclass per pipeline stage, resolved as defaults < YAML file < CLI overrides.

    cfg = load_config("configs/dialogsum-smollm2.yaml", ["--train.lr", "1e-4", "--train.max_minutes", "5"])

Unknown keys are rejected with the closest valid key suggested; the resolved config is written next
to every artifact (`save_resolved`) together with the library versions that produced it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from weaver.errors import ConfigError
from weaver.files import atomic_write_text, versions
from weaver.yaml_reader import parse_yaml, read_yaml  # re-exported: callers use weaver.config.read_yaml

log = logging.getLogger(__name__)
TASKS = ("summarize", "headline", "adcopy", "support_reply", "translate", "continue", "code", "custom")
METHODS = ("lora", "adalora", "prefix", "ia3", "adapter", "freeze", "full")
"""train.method values (weaver.tuning.methods); METHOD_OPTIONS says which options each one reads."""
OBJECTIVES = ("sft", "dpo")
"""train.objective values: what the loop minimises (weaver.tuning.step for sft, weaver.tuning.dpo for dpo)."""


BACKEND_NAMES = ("auto", "transformers", "llamacpp")
"""The decoding backends (`--backend`, `generate.backend`): weaver.generate.engine.BACKENDS plus auto."""
DEFAULT_BACKEND = "auto"
"""Every verb's default backend (generate, eval's generate.backend, serve, the apps), defined once: auto, which picks
llama.cpp on a CPU where it can run the model (measured faster at equal quality, bench/RESULTS.md) and transformers
on a GPU or where llama.cpp cannot (weaver.generate.engine.choose_backend; docs/ENGINE.md)."""


@dataclass
class ModelConfig:
    """Which pretrained model to start from."""

    name: str = "smollm2-135m-instruct"
    """Catalog name (`weaver models`), a local Hugging Face model folder, or a local .gguf file."""
    dtype: str = "auto"
    """Weights dtype for inference: auto | float32 | bfloat16."""
    quantize: str = "none"
    """Inference weights on the transformers backend: none | int8 (dynamic int8 Linear layers, float32 activations)."""

    def __post_init__(self) -> None:
        _choice("model.dtype", self.dtype, ("auto", "float32", "bfloat16"))
        _choice("model.quantize", self.quantize, ("none", "int8"))
        if self.quantize == "int8" and self.dtype == "bfloat16":
            raise ConfigError("--model.quantize int8 needs float32 weights: drop --model.dtype bfloat16")


@dataclass
class DataConfig:
    """Where the examples come from and how they are turned into prompts."""

    train: str | None = None
    """Training file (jsonl/json/csv/tsv/parquet or a datasets folder)."""
    dev: str | None = None
    """Dev file; when absent, carved from `train` by `split`."""
    test: str | None = None
    """Held-out test file for evaluation; when absent, carved from `train` by `split`."""
    task: str = "summarize"
    """Writing task whose template renders the prompt: one of summarize, headline, adcopy, support_reply,
    translate, continue, code, custom."""
    lang: str = "en"
    """Language of the task instruction: en | zh."""
    instruction: str | None = None
    """Instruction for every record (default: the record's own instruction, else the task's)."""
    template: str | None = None
    """For task=custom: the instruction template with {input}-style fields."""
    source_lang: str | None = None
    """For task=translate: the source language name (e.g. Chinese)."""
    target_lang: str | None = None
    """For task=translate: the target language name (e.g. English)."""
    columns: dict[str, str] = field(default_factory=dict)
    """Map of our field names (instruction, input, output, id) to the file's column names."""
    on_error: str = "fail"
    """What to do with a malformed record: fail (report all and stop) | skip (report and drop)."""
    max_seq_len: int = 512
    """Tokens per training sequence; the input is truncated, never the target."""
    max_source_len: int | None = None
    """Encoder-decoder models only (T5, BART): tokens of the source (the prompt + EOS), cut in the middle;
    None = data.max_seq_len."""
    max_target_len: int | None = None
    """Encoder-decoder models only: the longest target (+EOS) a record may have; None = max_output_tokens + 1."""
    pack: bool = False
    """Train on each batch as one padding-free row: position ids restart per example and a block-diagonal
    causal mask keeps examples apart, so the loss equals the padded batch's. Not with train.method prefix.
    Measured on dialogsum on CPU: 0.84x the padded speed with length-grouped batches, so off by default
    (bench/RESULTS.md, bench/packing.py)."""
    max_output_tokens: int = 256
    """A record whose output alone exceeds this many tokens is reported as malformed."""
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    """Train/dev/test ratios used when dev or test files are not given."""
    seed: int = 0
    """Seed for splitting and sampling."""
    limit_train: int | None = None
    """Use only the first N training records (after a seeded shuffle)."""
    limit_dev: int | None = None
    """Use only the first N dev records."""
    drop_leaks: bool = True
    """Drop dev/test records whose input also appears in train."""
    augment: dict[str, Any] = field(default_factory=dict)
    """Augmentation of the training split, e.g. {synonym: 0.1, swap: 0.05, delete: 0.05}."""
    synthetic: str | None = None
    """A file of synthetic records (`weaver data synth`) added to the training split only, never to dev/test."""
    synthetic_weight: float = 1.0
    """How much one synthetic record counts against a real one (>= 0): each is repeated int(w) times, plus once
    more for a seeded share w - int(w) of them; 0 leaves them out. Applies to data.synthetic and to records
    marked meta.synthetic in data.train (those never land in dev or test)."""

    def __post_init__(self) -> None:
        _choice("data.task", self.task, TASKS)
        _choice("data.lang", self.lang, ("en", "zh"))
        _choice("data.on_error", self.on_error, ("fail", "skip"))
        if self.task == "custom" and not self.template:
            raise ConfigError("data.task is custom but data.template is empty: set --data.template 'Text: {input}'")
        if len(self.split) != 3 or abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) < 0:
            raise ConfigError(f"data.split must be three non-negative ratios that sum to 1, got {self.split}")
        if self.max_seq_len < 16:
            raise ConfigError(f"data.max_seq_len must be at least 16, got {self.max_seq_len}")
        _in_range("data.synthetic_weight", self.synthetic_weight, "[0, 100]")
        if self.max_source_len is not None and self.max_source_len < 8:
            raise ConfigError(f"data.max_source_len must be at least 8 (or none for data.max_seq_len), got "
                              f"{self.max_source_len}")
        if self.max_target_len is not None and self.max_target_len < 2:
            raise ConfigError(f"data.max_target_len must be at least 2 (a token and EOS; or none for "
                              f"data.max_output_tokens + 1), got {self.max_target_len}")

    def seq2seq_limits(self, seq2seq: bool) -> tuple[int, int]:
        """(max_source_len, max_target_len) for an encoder-decoder model, the defaults filled in.

        Raises:
            ConfigError: max_source_len / max_target_len set for a decoder-only model (seq2seq False).
        """
        if not seq2seq:
            for name in ("max_source_len", "max_target_len"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"--data.{name} applies only to encoder-decoder models (T5, BART); this "
                                      "model is decoder-only: drop it and set --data.max_seq_len")
            return self.max_seq_len, self.max_output_tokens + 1
        return self.max_source_len or self.max_seq_len, self.max_target_len or self.max_output_tokens + 1


@dataclass
class TrainConfig:
    """How the model is tuned."""

    method: str = "lora"
    """lora | adalora | prefix | ia3 | adapter (bottleneck adapters, Houlsby 2019) | freeze | full."""
    out_dir: str = "runs/run"
    """Run directory: config, metrics, checkpoints and the adapter are written here."""
    lora_r: int = 16
    """LoRA/AdaLoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names to adapt (lora/adalora/ia3), or ["all-linear"]."""
    layers: list[int] | None = None
    """Adapt only these transformer blocks (negative counts from the top); None = all."""
    top_layers: int | None = None
    """Adapt (or, for freeze, train) only the top N blocks; backward stops below them."""
    train_lm_head: bool = False
    """For freeze: also train the LM head (tied embeddings are trained with it)."""
    num_virtual_tokens: int = 16
    """For prefix tuning: the number of virtual prefix tokens."""
    adapter_size: int = 16
    """For adapter: the bottleneck width (units between the down- and the up-projection of each adapter)."""
    adapter_placement: str = "both"
    """For adapter: after each adapted block's attention (attn), its MLP (mlp), or both."""
    optimizer: str = "adamw"
    """adamw | sgd."""
    lr: float = 3e-4
    """Peak learning rate."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 0.0
    """Decoupled weight decay (L2 for SGD)."""
    scheduler: str = "constant"
    """constant | linear | cosine, each after `warmup_steps` of linear warm-up."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    batch_size: int = 8
    """Examples per optimizer micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    epochs: float = 1.0
    """Passes over the training set, > 0 (fractions allowed; ignored when max_steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (at least 1); None trains for `epochs`."""
    max_minutes: float | None = None
    """Wall-clock budget: stop cleanly after this many minutes and keep the best checkpoint."""
    precision: str = "auto"
    """auto | bf16 | fp32. auto picks bf16 autocast where the hardware supports it."""
    frozen_dtype: str = "auto"
    """auto | float32 | bfloat16 | nf4: how the frozen base weights (the Linear layers an adapter method does not
    train) are stored. bfloat16 halves their memory and skips autocast's per-step copy; the loss and adapter
    gradients are those of float32 storage under bf16 autocast (a test checks it). nf4: 4-bit NormalFloat blocks
    (QLoRA; bitsandbytes, `pip install weaver[quant4]`), dequantized in every forward: about a seventh of fp32's
    memory, slower steps, and an adapter trained against the rounded base. auto: bfloat16 when the precision is
    bf16 and the method saves only an adapter (lora, adalora, ia3, prefix, adapter), else float32."""
    logit_chunk_mb: int = 128
    """Memory for the LM head's logits at once in the loss (0 = all target positions at once): above it the logits
    are computed in chunks of positions, each recomputed in the backward pass. Gemma-3-270M (262k vocabulary),
    adgen preset: peak RSS 4.58 -> 2.90 GB (bench/train_memory.py), same losses; SmolLM2's batches fit one chunk."""
    mmap_threshold_kb: int | None = None
    """CPU training under glibc, for the least memory: allocations of at least this many KiB get their own memory
    map, returned to the system when freed (mallopt M_MMAP_THRESHOLD, set by `weaver tune`; 16 to 32768). glibc
    otherwise raises its threshold to the largest block freed so far and keeps later activations on its heap.
    Dialogsum preset, 8 steps, with weaver's huge-page tensors: 1024 gives peak RSS 1.42 instead of 1.66 GB for
    about 16% fewer tokens/s (bench/RESULTS.md, train_memory-dialogsum-smollm2). none (default): glibc's own;
    MALLOC_MMAP_THRESHOLD_ in the environment wins over this."""
    gradient_checkpointing: bool = False
    """Recompute the activations of the trained blocks in the backward pass instead of keeping them: less
    memory (SmolLM2-135M, LoRA in the top 10 blocks, batch 8 x 300 tokens: one step peaks at 1.8 instead of
    2.5 GB) for ~20% fewer tokens/s. Only blocks at or above the lowest trained one are checkpointed."""
    seed: int = 0
    """Seed for initialisation, shuffling and dropout (0 to 2**32 - 1)."""
    eval_every: int = 20
    """Run validation every N optimizer steps (0 = only at the end)."""
    save_every: int = 20
    """Write a resumable checkpoint every N optimizer steps."""
    keep_checkpoints: int = 2
    """How many recent resumable checkpoints to keep."""
    metric: str = "dev_loss"
    """Early-stopping / best-checkpoint metric: dev_loss | rougeL | (objective dpo) reward_accuracy | reward_margin."""
    rouge_samples: int = 16
    """Dev examples generated for the rougeL metric."""
    patience: int | None = None
    """Stop after this many validations without improvement (None = never)."""
    resume: str = "auto"
    """auto (resume if a checkpoint exists) | never | always."""
    logging: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Loggers: tensorboard, mlflow, wandb."""
    dropout: float | None = None
    """Set every attention/hidden dropout of the model to this probability in [0, 1) for training (None = the
    model's own; weaver.tuning.methods.set_dropout)."""
    group_by_length: bool = True
    """Batch examples of similar length together to waste little on padding."""
    objective: str = "sft"
    """sft (next-token loss on references) | dpo (preference pairs {prompt, chosen, rejected} in data.train; the
    reference is the starting model, weaver.tuning.dpo)."""
    dpo_beta: float = 0.1
    """For dpo: the strength of the pull towards the reference (beta of the DPO paper; for ipo its tau)."""
    dpo_loss_type: str = "sigmoid"
    """For dpo: sigmoid (the DPO paper) | ipo (Azar et al. 2023) | hinge (SLiC)."""
    distributed: str = "accelerate"
    """With several processes: accelerate (what the launcher set up: DDP under torchrun, or accelerate's
    DeepSpeed/FSDP plugin from an `accelerate launch` config, GPU only) | fsdp (Weaver shards the weights, gradients
    and optimizer state across the processes itself with torch's FSDP2, on CPUs (gloo) or GPUs; launch with torchrun;
    weaver.tuning.sharded). fsdp runs the methods lora, ia3, freeze and full (lora and full in tests) and refuses
    train.objective dpo, train.metric rougeL, train.method adalora, prefix or adapter and train.frozen_dtype nf4."""

    def __post_init__(self) -> None:
        _choice("train.method", self.method, METHODS)
        _choice("train.objective", self.objective, OBJECTIVES)
        _choice("train.dpo_loss_type", self.dpo_loss_type, ("sigmoid", "ipo", "hinge"))
        if self.objective == "sft":
            for name in ("dpo_beta", "dpo_loss_type"):
                if getattr(self, name) != getattr(TrainConfig, name):
                    raise ConfigError(f"--train.{name} applies only to --train.objective dpo: drop it or set "
                                      "--train.objective dpo")
            if self.metric in ("reward_accuracy", "reward_margin"):
                raise ConfigError(f"--train.metric {self.metric} is measured on preference pairs: set "
                                  "--train.objective dpo, or use dev_loss or rougeL")
        _choice("train.adapter_placement", self.adapter_placement, ("both", "attn", "mlp"))
        _choice("train.optimizer", self.optimizer, ("adamw", "sgd"))
        _choice("train.scheduler", self.scheduler, ("constant", "linear", "cosine"))
        _choice("train.precision", self.precision, ("auto", "bf16", "fp32"))
        _choice("train.frozen_dtype", self.frozen_dtype, ("auto", "float32", "bfloat16", "nf4"))
        if self.frozen_dtype in ("bfloat16", "nf4") and self.method in ("freeze", "full"):
            raise ConfigError(f"--train.frozen_dtype {self.frozen_dtype}: train.method {self.method} saves the whole "
                              "model, frozen weights included, so they stay float32; drop the setting")
        if self.frozen_dtype == "bfloat16" and self.precision == "fp32":
            raise ConfigError("--train.frozen_dtype bfloat16 needs bf16 autocast: drop --train.precision fp32 "
                              "or set --train.frozen_dtype float32")
        _choice("train.metric", self.metric, ("dev_loss", "rougeL", "reward_accuracy", "reward_margin"))
        _choice("train.resume", self.resume, ("auto", "never", "always"))
        _choice("train.distributed", self.distributed, ("accelerate", "fsdp"))
        if self.distributed == "fsdp":
            self._check_fsdp()
        for name, interval in TRAIN_RANGES.items():
            _in_range(f"train.{name}", getattr(self, name), interval)

    def _check_fsdp(self) -> None:
        """What a sharded run cannot do, refused with the flag to change."""
        refused = [
            ("objective", "dpo", "its reference pass reads the whole model on each process"),
            ("metric", "rougeL", "generating dev replies needs the whole model in one process"),
            ("method", "adalora", "AdaLoRA's rank allocator reads whole gradients"),
            ("method", "prefix", "it failed inside torch's FSDP when tried: its prefix embedding met a sharded weight"),
            ("method", "adapter", "it failed inside torch's FSDP when tried"),
            ("frozen_dtype", "nf4", "bitsandbytes' 4-bit layers are not sharded"),
        ]
        for name, value, why in refused:
            if getattr(self, name) == value:
                raise ConfigError(f"--train.{name} {value} does not work with --train.distributed fsdp ({why}): "
                                  "change one of them")


@dataclass
class GenerateConfig:
    """Decoding settings shared by eval, generate, serve and the apps."""

    max_new_tokens: int | None = None
    """New tokens per reply; None = the task's default."""
    temperature: float = 0.0
    """0 = greedy; > 0 samples."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    num_beams: int = 1
    """Beam search width (1 = no beam search)."""
    repetition_penalty: float = 1.1
    """Penalty on tokens already generated (1.0 = none)."""
    seed: int = 0
    """Sampling seed."""
    batch_size: int = 8
    """Prompts generated together."""
    backend: str = DEFAULT_BACKEND
    """Decoding backend: auto (the default: llama.cpp on a CPU where it can run the model, else transformers:
    weaver.generate.engine.choose_backend) | transformers | llamacpp (llama.cpp on a GGUF export, via xllamacpp)."""
    gguf_quant: str = "q8_0"
    """Weights of the GGUF the llamacpp backend exports a run or HF folder to: f16 | q8_0 | q4_k_m."""

    def __post_init__(self) -> None:
        _choice("generate.backend", self.backend, BACKEND_NAMES)
        _choice("generate.gguf_quant", self.gguf_quant, ("f16", "q8_0", "q4_k_m"))
        if self.temperature < 0:
            raise ConfigError(f"generate.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generate.top_p must be in (0, 1], got {self.top_p}")


@dataclass
class EvalConfig:
    """Base-vs-tuned evaluation."""

    after_tune: bool = False
    """Evaluate base vs tuned on the test split when tuning ends."""
    limit: int | None = 100
    """Evaluate on the first N test examples (None = all)."""
    base: str | None = None
    """Model to compare against; default: the run's base model."""
    bootstrap: int = 1000
    """Paired bootstrap resamples for confidence intervals."""
    out_dir: str | None = None
    """Report folder; default: <run>/eval."""
    semantic: bool = True
    """Compute semantic similarity with the offline sentence-embedding model when installed."""
    perplexity: bool = True
    """Compute each model's perplexity of the references (teacher-forced, given the prompt)."""
    grounding: bool | None = None
    """Faithfulness: share of output sentences supported by the input, and of sentences with invented
    numbers/names (weaver.eval.explain); unsupported sentences are highlighted in the examples.
    None = on for the tasks whose output should rest on the input (summarize, headline)."""
    examples: int = 8
    """Side-by-side examples shown in report.md / report.html."""
    zh_tokens: str = "char"
    """Chinese ROUGE units: char (each character a token) | word (jieba words)."""
    pairs: str | None = None
    """Held-out preference pairs file: reward accuracy of the model under test against its base, and each model's
    share of pairs where it prefers the chosen reply (weaver.eval.preferences)."""
    server: str | None = None
    """Base URL of an OpenAI-compatible server (weaver serve, vLLM, llama.cpp's server) that generates the model
    under test's outputs: POST /v1/completions with each prompt rendered here, as in training. Perplexity is still
    computed here from model.name. None = generate in this process."""
    server_model: str | None = None
    """With eval.server: the served id of the model under test (its GET /v1/models name)."""
    base_server_model: str | None = None
    """With eval.server: the served id of the base too; None = the base is generated in this process."""
    server_concurrency: int = 4
    """With eval.server: requests in flight at once (a batching server decodes them together)."""

    def __post_init__(self) -> None:
        _choice("eval.zh_tokens", self.zh_tokens, ("char", "word"))
        if self.server and not self.server_model:
            raise ConfigError("--eval.server needs --eval.server_model: the id the server serves the model under "
                              "test as (see its GET /v1/models)")
        if (self.server_model or self.base_server_model) and not self.server:
            raise ConfigError("--eval.server_model / --eval.base_server_model name models on --eval.server: set it")
        if self.server_concurrency < 1:
            raise ConfigError(f"eval.server_concurrency must be at least 1, got {self.server_concurrency}")
        if self.bootstrap < 100:
            raise ConfigError(f"eval.bootstrap must be at least 100 resamples, got {self.bootstrap}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"eval.limit must be at least 1 (or none for all), got {self.limit}")


@dataclass
class RunConfig:
    """The whole pipeline's configuration: one section per stage."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Allowed values of the numeric train options, in interval notation ("[" includes the bound, "(" excludes it).
TRAIN_RANGES = {
    "lr": "(0, inf)", "momentum": "[0, 1]", "weight_decay": "[0, inf)", "max_grad_norm": "[0, inf)",
    "epochs": "(0, inf)", "max_steps": "[1, inf)", "max_minutes": "(0, inf)", "seed": f"[0, {2**32 - 1}]",
    "dropout": "[0, 1)", "lora_dropout": "[0, 1)", "lora_r": "[1, inf)", "lora_alpha": "[1, inf)",
    "num_virtual_tokens": "[1, inf)", "adapter_size": "[1, inf)", "warmup_steps": "[0, inf)",
    "batch_size": "[1, inf)", "grad_accum": "[1, inf)", "eval_every": "[0, inf)", "save_every": "[0, inf)",
    "keep_checkpoints": "[1, inf)", "rouge_samples": "[1, inf)", "patience": "[1, inf)", "dpo_beta": "(0, inf)",
    "logit_chunk_mb": "[0, inf)", "mmap_threshold_kb": "[16, 32768]",
}
_RANGE_HINTS = {"train.max_steps": " (none trains for --train.epochs)", "train.max_minutes": " (none: no time budget)",
                "train.patience": " (none never stops early)", "train.eval_every": " (0 validates only at the end)",
                "train.mmap_threshold_kb": " (none keeps glibc's own threshold)"}

# Train options that only some methods use -> those methods. A value other than the default that reaches a
# method it does not apply to is dropped with a notice when it came from a YAML file (a preset written for
# another method: `weaver tune preset.yaml --train.method ia3`), and refused when set on the command line.
# A new method adds itself to the tuples of the options it reads.
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "layers": ("lora", "adalora", "adapter", "freeze"),
    "top_layers": ("lora", "adalora", "adapter", "freeze"),
    "lora_r": ("lora", "adalora"),
    "lora_alpha": ("lora", "adalora"),
    "lora_dropout": ("lora", "adalora"),
    "target_modules": ("lora", "adalora", "ia3"),
    "train_lm_head": ("freeze",),
    "num_virtual_tokens": ("prefix",),
    "adapter_size": ("adapter",),
    "adapter_placement": ("adapter",),
    "gradient_checkpointing": ("lora", "adalora", "ia3", "adapter", "freeze", "full"),
}


def _in_range(flag: str, value: Any, interval: str) -> None:
    """Raise ConfigError unless value (None passes: "not set") is a finite number inside interval, e.g. "[0, 1)"."""
    if value is None or isinstance(value, bool):
        return
    lo_s, hi_s = (part.strip() for part in interval[1:-1].split(","))
    lo, hi = float(lo_s), float(hi_s)
    above = lo < value if interval[0] == "(" else lo <= value
    inside = above and (value < hi if interval[-1] == ")" else value <= hi)
    if isinstance(value, float) and not math.isfinite(value) or not inside:
        bounds = [f"{'above' if interval[0] == '(' else 'at least'} {lo_s}"]
        if hi_s != "inf":
            bounds.append(f"{'below' if interval[-1] == ')' else 'at most'} {hi_s}")
        kind = "a finite number " if isinstance(value, float) else ""
        raise ConfigError(f"--{flag} must be {kind}{' and '.join(bounds)}{_RANGE_HINTS.get(flag, '')}, "
                          f"got {value!r}")


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), allowed, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"--{flag} {value!r} is not one of {', '.join(allowed)}{extra}")


def _unknown_key(where: str, key: str, valid: list[str]) -> ConfigError:
    hint = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    extra = f"; did you mean {hint[0]!r}?" if hint else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key {where + key!r}{extra}")


def _coerce(flag: str, value: Any, tp: Any) -> Any:
    """Convert a YAML or command-line value to the annotated field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(flag, value, inner[0])
    if isinstance(value, str) and (origin in (list, dict) or tp in (list, dict)):
        try:
            value = parse_yaml(value)
        except yaml.YAMLError as exc:
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise ConfigError(f"--{flag}: cannot parse {shown!r} as YAML ({getattr(exc, 'problem', exc)})") from None
        if origin is list and not isinstance(value, list):
            value = [value]
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            return str(value)
        if origin is list:
            if not isinstance(value, list):
                raise ValueError(value)
            return [_coerce(flag, v, args[0]) for v in value] if args else list(value)
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError):
        name = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"--{flag} expects {name}, got {value!r}") from None
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where.rstrip('.') or 'root'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(where, str(key), names)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(where + key, value, tp)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid config section {where!r}: {exc}") from None


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn ["--train.lr", "1e-4", "--data.task=headline"] into a nested dict of raw strings."""
    nested: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise ConfigError(f"expected an override like --train.lr 1e-4, got {arg!r}")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg} needs a value")
            key, value = arg[2:], args[i + 1]
            i += 2
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "columns":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Resolve a RunConfig from defaults, then a YAML file, then `--section.key value` overrides.

    Args:
        path: YAML file (optional).
        overrides: command-line style overrides.
    Returns:
        The validated RunConfig.
    Raises:
        ConfigError: missing file, bad YAML, unknown key (with a suggestion) or invalid value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist; see configs/ for the shipped presets")
        data = read_yaml(p)
    cli = parse_overrides(overrides or [])
    if cli:
        data = _merge(data, cli)
    cfg = _build(RunConfig, data, "")
    cli_train = cli.get("train") if isinstance(cli.get("train"), dict) else {}
    return dataclasses.replace(cfg, train=_drop_other_methods_options(cfg.train, set(cli_train)))


def _drop_other_methods_options(train: TrainConfig, from_cli: set[str]) -> TrainConfig:
    """Reset options of other methods (METHOD_OPTIONS) that the YAML file set; refuse those set on the command line.

    Raises:
        ConfigError: a command-line option that train.method does not use, naming the flag.
    """
    defaults = TrainConfig()
    foreign = {name: getattr(train, name) for name, methods in METHOD_OPTIONS.items()
               if train.method not in methods and getattr(train, name) != getattr(defaults, name)}
    for name in sorted(set(foreign) & from_cli):
        *rest, last = METHOD_OPTIONS[name]
        users = f"{', '.join(rest)} or {last}" if rest else last
        raise ConfigError(f"--train.{name} applies only to train.method {users}, not {train.method}: drop it or "
                          "pick one of those methods")
    if not foreign:
        return train
    shown = ", ".join(f"train.{k}={v!r}" for k, v in foreign.items())
    log.warning("train.method %s does not use %s from the config file: ignored", train.method, shown)
    return dataclasses.replace(train, **{name: getattr(defaults, name) for name in foreign})


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain-dict copy of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def save_resolved(cfg: Any, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write `config.yaml` (the fully resolved config) and `versions.json` into out_dir."""
    out = Path(out_dir)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    atomic_write_text(out / "versions.json", json.dumps({**versions(), **(extra or {})}, indent=2) + "\n")
