"""Turn a conversation into the exact prompt string a model sees, for training AND inference.

The one rule that keeps fine-tuning honest: the same function renders prompts at training time and at
inference time, so the tuned model is asked questions in exactly the format it was trained on.
Models with a chat template use it; models without one (base models) use `PLAIN_TEMPLATE`.
"""

from __future__ import annotations

PLAIN_ROLES = {"system": "### System", "user": "### Instruction", "assistant": "### Response"}


def has_chat_template(tokenizer) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_messages(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Render messages ([{role, content}]) to the prompt text, ending where the assistant's reply begins.

    Args:
        tokenizer: a transformers tokenizer (its chat template is used when present).
        messages: system/user/assistant turns; the last one is normally the user's.
        add_generation_prompt: end with the assistant header so the model writes the reply.
    Returns:
        The prompt string. Training appends `target + eos` to exactly this string.
    """
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    parts = [f"{PLAIN_ROLES.get(m['role'], m['role'])}:\n{m['content']}\n\n" for m in messages]
    if add_generation_prompt:
        parts.append(f"{PLAIN_ROLES['assistant']}:\n")
    bos = tokenizer.bos_token or ""
    return bos + "".join(parts)


def end_of_turn(tokenizer) -> str:
    """The token string that ends an assistant turn (appended to training targets)."""
    return tokenizer.eos_token or ""
