"""Task templates: every task renders in en and zh, and training and inference prompts are identical."""

from __future__ import annotations

import json

import pytest

from weaver.config import DataConfig
from weaver.data.chat import render_messages
from weaver.data.readers import read_records
from weaver.data.tasks import TASKS, build_messages, record_from_fields, render_prompt, template_fields
from weaver.data.tokenize import encode_example
from weaver.errors import ConfigError, DataError

CUSTOM = "Write ad copy in a {tone} tone for this product:\n{input}"


def _cfg(task: str, lang: str, **kw) -> DataConfig:
    extra = {"template": CUSTOM} if task == "custom" else {}
    if task == "translate":
        extra.update(source_lang="zh", target_lang="en")
    return DataConfig(task=task, lang=lang, **extra, **kw)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_train_and_inference_prompts_are_identical(tmp_path, any_tokenizer, task, lang):
    tok = any_tokenizer
    cfg = _cfg(task, lang)
    row = {"id": "r1", "input": "第一段文字。 The first paragraph.", "output": "A reply. 回复。", "tone": "playful"}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    (train_record,) = read_records(path)
    fields = {"input": row["input"], "tone": "playful"} if task == "custom" else {"input": row["input"]}
    infer_record = record_from_fields(task, fields, cfg)

    train_prompt = render_prompt(tok, train_record, cfg)
    infer_prompt = render_prompt(tok, infer_record, cfg)
    assert train_prompt == infer_prompt
    # the tokens the generator feeds at inference are exactly the masked prefix of the training example
    infer_ids = tok(infer_prompt, add_special_tokens=False)["input_ids"]
    ex = encode_example(tok, train_prompt, train_record.output, max_seq_len=512)
    n = len(infer_ids)
    assert ex["input_ids"][:n] == infer_ids
    assert ex["labels"][:n] == [-100] * n and -100 not in ex["labels"][n:]

    instruction = TASKS[task].instruction[lang]
    if task == "custom":
        assert "in a playful tone" in infer_prompt
    elif task == "translate":
        assert ("Translate the following Chinese text into English." if lang == "en"
                else "请将下面的中文文本翻译成英文。") in infer_prompt
    else:
        assert f"{instruction}\n\n{row['input']}" in infer_prompt
    if tok.chat_template:
        assert infer_prompt.endswith("<|im_start|>assistant\n")
    else:
        assert infer_prompt.endswith("### Response:\n") and "<|im_start|>user" not in infer_prompt


def test_every_task_has_en_and_zh_instructions_and_defaults():
    for name, task in TASKS.items():
        assert set(task.instruction) == {"en", "zh"}
        if name != "custom":
            assert task.instruction["en"] and task.instruction["zh"]
            assert any("\u4e00" <= c <= "\u9fff" for c in task.instruction["zh"])
        assert task.max_new_tokens > 0 and task.metrics and task.fields


def test_precedence_config_instruction_then_record_then_task(tokenizer):
    rec = record_from_fields("summarize", {"input": "Text.", "instruction": "Summarize the dialogue."})
    assert build_messages(rec, DataConfig())[-1]["content"] == "Summarize the dialogue.\n\nText."
    cfg = DataConfig(instruction="Sum it up.")
    assert build_messages(rec, cfg)[-1]["content"] == "Sum it up.\n\nText."
    bare = record_from_fields("summarize", {"input": "Text."})
    assert build_messages(bare, DataConfig())[-1]["content"].startswith(TASKS["summarize"].instruction["en"])


def test_chat_records_render_like_an_openai_request(tmp_path, any_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Sunny."}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": messages}) + "\n")
    (rec,) = read_records(path)
    # a chat record gets no task instruction: its prompt is what /v1/chat/completions would render
    assert render_prompt(any_tokenizer, rec, DataConfig(task="headline")) == render_messages(any_tokenizer,
                                                                                             messages[:-1])


def test_custom_template_fields_and_errors():
    assert template_fields("A {product} for {audience}: {input} {product}") == ("product", "audience", "input")
    with pytest.raises(ConfigError, match="plain name"):
        template_fields("{0} {input}")
    with pytest.raises(ConfigError, match="not a valid template"):
        template_fields("{input")
    cfg = DataConfig(task="custom", template="Tone: {tone}")
    rec = record_from_fields("custom", {"tone": "calm"}, cfg)
    assert build_messages(rec, cfg)[-1]["content"] == "Tone: calm"
    rec.meta.clear()
    with pytest.raises(DataError, match="field 'tone' of --data.template is missing"):
        build_messages(rec, cfg)


@pytest.mark.parametrize("fields,message", [
    ({}, "field 'input' is required"),
    ({"input": "  "}, "field 'input' is required"),
    ({"input": 3}, "must be a string"),
    ({"input": "x", "product": "y"}, "unknown field 'product'"),
])
def test_record_from_fields_validates(fields, message):
    with pytest.raises(DataError, match=message):
        record_from_fields("headline", fields)
    with pytest.raises(ConfigError, match="not one of"):
        record_from_fields("poem", {"input": "x"})
