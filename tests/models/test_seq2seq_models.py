"""Encoder-decoder models (tiny random T5 and BART): detection, loading, source/target encoding, limits, export."""

from __future__ import annotations

import json

import pytest
import torch

from weaver.config import DataConfig, load_config
from weaver.errors import ConfigError, DataError, WeaverError
from weaver.models.arch import auto_class, is_seq2seq, model_is_seq2seq
from weaver.models.loading import load_model, load_tokenizer


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_detected_from_config_and_loaded_as_seq2seq(kind, tiny_t5_dir, tiny_bart_dir, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    folder = tiny_t5_dir if kind == "t5" else tiny_bart_dir
    assert is_seq2seq(folder) and not is_seq2seq(tiny_model_dir)
    assert auto_class(folder) is AutoModelForSeq2SeqLM and auto_class(tiny_model_dir) is AutoModelForCausalLM
    model, tok = load_model(folder)
    expected = "T5ForConditionalGeneration" if kind == "t5" else "BartForConditionalGeneration"
    assert type(model).__name__ == expected and model_is_seq2seq(model) and not model.training
    assert tok.chat_template is None  # the source is the plain prompt, never a chat template
    assert load_tokenizer(tiny_model_dir).chat_template  # a decoder-only model keeps its own


def test_plain_prompt_is_the_source_and_labels_are_the_target_only(tiny_t5_dir):
    from weaver.data.records import Record
    from weaver.data.tasks import render_prompt
    from weaver.data.tokenize import encode_seq2seq_example

    tok = load_tokenizer(tiny_t5_dir)
    record = Record(id="1", instruction="", input="The council met on Friday.", output="Council met.")
    prompt = render_prompt(tok, record, DataConfig())
    assert prompt.startswith("<|im_start|>### Instruction:") and prompt.endswith("### Response:\n")
    assert "<|im_start|>user" not in prompt  # no chat template
    ex = encode_seq2seq_example(tok, prompt, record.output, max_source_len=512, max_target_len=32)
    target = tok(record.output, add_special_tokens=False)["input_ids"]
    assert ex["labels"] == target + [tok.eos_token_id]  # the target tokens and EOS, nothing of the prompt
    assert ex["input_ids"] == tok(prompt, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_source_is_cut_in_the_middle_and_a_long_target_is_refused(tiny_t5_dir):
    from weaver.data.tokenize import Seq2SeqCollator, encode_seq2seq_example

    tok = load_tokenizer(tiny_t5_dir)
    prompt = "HEAD " + "filler " * 200 + "TAIL"
    ex = encode_seq2seq_example(tok, prompt, "short", max_source_len=20, max_target_len=8)
    ids = ex["input_ids"]
    assert len(ids) == 20 and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[:2]).startswith("HEAD") and "TAIL" in tok.decode(ids[-3:])
    with pytest.raises(DataError, match="max_target_len 3"):
        encode_seq2seq_example(tok, prompt, "a much longer reference text", max_source_len=20, max_target_len=3)
    batch = Seq2SeqCollator(tok.pad_token_id)([ex, encode_seq2seq_example(tok, "hi", "a b c d", 20, 8)])
    assert batch["input_ids"].shape == (2, 20) and batch["labels"].shape[1] == max(len(ex["labels"]), 5)
    assert int(batch["attention_mask"][1].sum()) == len(encode_seq2seq_example(tok, "hi", "x", 20, 8)["input_ids"])
    assert (batch["labels"][0, len(ex["labels"]):] == -100).all()


def test_length_limits_are_validated_and_refused_on_decoder_only():
    with pytest.raises(ConfigError, match="max_source_len must be at least 8"):
        load_config(None, ["--data.max_source_len", "4"])
    with pytest.raises(ConfigError, match="max_target_len must be at least 2"):
        load_config(None, ["--data.max_target_len", "1"])
    cfg = load_config(None, ["--data.max_source_len", "128"]).data
    assert cfg.seq2seq_limits(True) == (128, cfg.max_output_tokens + 1)
    with pytest.raises(ConfigError, match="only to encoder-decoder"):
        cfg.seq2seq_limits(False)
    assert DataConfig(max_seq_len=300, max_target_len=40).seq2seq_limits(True) == (300, 40)


def _seq2seq_run(base_dir, out, seed=1):
    """A run folder with a LoRA (non-zero B) on the tiny T5, as `weaver tune` writes it."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from weaver.config import RunConfig, save_resolved

    torch.manual_seed(seed)
    peft_model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(base_dir),
                                LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8,
                                           target_modules=["q", "v", "wo"], init_lora_weights=False))
    peft_model.save_pretrained(out / "adapter")
    cfg = RunConfig()
    cfg.model.name = str(base_dir)
    save_resolved(cfg, out)
    return out


def test_export_merge_round_trip_and_gguf_refused(tiny_t5_dir, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from weaver.models.export import export_gguf, merge_run

    run = _seq2seq_run(tiny_t5_dir, tmp_path / "run")
    out = merge_run(run, tmp_path / "merged")
    assert not (out / "adapter_config.json").exists() and is_seq2seq(out)
    merged = AutoModelForSeq2SeqLM.from_pretrained(out).eval()  # plain transformers, no peft
    tuned, tok = load_model(run)  # base + adapter, unmerged
    src = torch.tensor([tok("Summarise: the port reopened.")["input_ids"]])
    dec = torch.tensor([[0, 5, 9, 11]])
    with torch.no_grad():
        want = tuned(input_ids=src, decoder_input_ids=dec).logits
        torch.testing.assert_close(merged(input_ids=src, decoder_input_ids=dec).logits, want, atol=1e-4, rtol=1e-4)
        base = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
        assert (base(input_ids=src, decoder_input_ids=dec).logits - want).abs().max() > 1e-3
    assert json.loads((out / "weaver-export.json").read_text())["base"] == str(tiny_t5_dir)
    with pytest.raises(WeaverError, match="encoder-decoder T5ForConditionalGeneration.*--merge"):
        export_gguf(run, tmp_path / "t5.gguf")
    assert not (tmp_path / "t5.gguf").exists()
