"""The plain Hugging Face recipe a user copies from the docs: transformers Trainer + peft LoRA.

    .venv/bin/python bench/contenders/hf_plain.py --model MODEL_DIR --train train.jsonl --out OUT \
        [--epochs 2 --lr 3e-4 --batch-size 8 --save-steps 5 --max-seq-len 512 --max-steps N]

fp32 (no mixed precision), LoRA r=16/alpha=32/dropout=0.05 on all linear layers, the tokenizer's chat
template (a base model without one, Gemma-3-270M: the plain alpaca-style format weaver uses), loss on the
reply only (DataCollatorForSeq2Seq pads each batch to its longest example with -100 labels), Trainer's
default linear-decay schedule and AdamW. Checkpoints (adapter only) every --save-steps steps, and the final
adapter in OUT/final via `trainer.save_model`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def encode(tok, ex: dict, max_len: int) -> dict:
    """Prompt + reply + EOS; labels -100 on the prompt. The prompt is the one every contender and the scoring get:
    the chat template, or for a base model without one the plain format (weaver.data.chat.render_messages)."""
    from weaver.data.chat import render_messages

    prompt = render_messages(tok, [{"role": "user", "content": ex["user"]}])
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tok(ex["output"] + tok.eos_token, add_special_tokens=False)["input_ids"]
    ids = (p_ids + t_ids)[:max_len]
    labels = ([-100] * len(p_ids) + t_ids)[:max_len]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True, help="jsonl with instruction, input, output")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--save-steps", type=int, default=5)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model)
    lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    with open(args.train, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    train = [encode(tok, {"user": f"{r['instruction']}\n\n{r['input']}", "output": r["output"]}, args.max_seq_len)
             for r in rows]
    targs = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        num_train_epochs=args.epochs, max_steps=args.max_steps, save_strategy="steps", save_steps=args.save_steps,
        save_only_model=True, logging_steps=1, report_to="none", use_cpu=True, seed=args.seed,
        dataloader_num_workers=0,
    )
    collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collator)
    trainer.train()
    trainer.save_model(str(Path(args.out) / "final"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
