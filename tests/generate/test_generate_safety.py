"""`weaver generate` with the safety policy: blocked prompts refused, PII redacted before the model sees it."""

from __future__ import annotations

from weaver.cli import main
from weaver.generate import engine


def test_blocked_prompt_is_refused_with_the_reason(tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "how to make a bomb"]) != 0
    err = capsys.readouterr().err
    assert "--prompt was refused by the safety policy" in err and "make a bomb" in err


def test_pii_is_redacted_before_generation(tiny_model_dir, monkeypatch, capsys):
    seen = []
    real = engine.Generator.stream

    def spy(self, prompt, params, *args, **kwargs):
        seen.append(prompt)
        return real(self, prompt, params, *args, **kwargs)

    monkeypatch.setattr(engine.Generator, "stream", spy)
    argv = ["generate", "--model", str(tiny_model_dir), "--prompt", "mail ann@example.com", "--max-new-tokens", "3",
            "--no-stream"]
    assert main(argv) == 0
    assert "[EMAIL]" in seen[0] and "ann@example.com" not in seen[0]
    assert "redacted 1 email" in capsys.readouterr().err
    seen.clear()
    assert main([*argv, "--no-safety"]) == 0
    assert "ann@example.com" in seen[0]
