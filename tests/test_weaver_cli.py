"""CLI: every verb is listed and parses; user errors print one sentence and exit non-zero without a traceback."""

import subprocess
import sys

import pytest

from weaver.cli import VERBS, main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "weaver.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_verb_with_its_help_line():
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    assert {"models", "generate", "data", "tune", "eval", "export", "serve", "runs"} <= set(VERBS)
    for verb, (_, help_text) in VERBS.items():
        assert f"    {verb}" in out.stdout, verb
        assert help_text[:40] in " ".join(out.stdout.split()), verb  # argparse may wrap the help line


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_its_own_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: weaver {verb}") and VERBS[verb][1][:30] in " ".join(out.split())


def test_models_lists_both_catalog_entries(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "gemma3-270m" in out and "Apache-2.0" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["generate", "--model", "nosuchmodel", "--prompt", "hi"], "unknown model 'nosuchmodel'"),
        (["generate", "--model", "/nonexistent/dir/m", "--prompt", "hi"], "does not exist"),
        (["generate", "--model", "someorg/somemodel", "--prompt", "hi"], "never downloads"),
        (["generate", "--prompt", "   "], "--prompt is empty"),
    ],
)
def test_user_errors_are_one_sentence(args, needle):
    out = _run(*args)
    assert out.returncode != 0
    assert needle in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["data", "check", "/nonexistent/train.jsonl", "--model", "none"], "/nonexistent/train.jsonl"),
        (["tune", "/nonexistent/cfg.yaml"], "/nonexistent/cfg.yaml"),
        (["eval", "--model", "nosuchmodel", "--data", "/nonexistent/t.jsonl", "--out", "/tmp/x"], "nosuch"),
        (["export", "/nonexistent/run", "--merge", "--out", "/tmp/x"], "/nonexistent/run"),
        (["newsroom", "--model", "nosuchmodel", "--in", "/nonexistent/in", "--out", "/tmp/x"], "/nonexistent/in"),
        (["support", "ask", "--index", "/nonexistent/kb.sqlite", "hello"], "/nonexistent/kb.sqlite"),
    ],
)
def test_other_verbs_report_missing_inputs_in_one_line(args, needle, capsys):
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0 and needle in err, err
    assert err.startswith("error: ") and "internal error" not in err and len(err.strip().splitlines()) == 1


def test_generate_prints_the_engines_reply(tiny_model_dir, capsys):
    from weaver.data.chat import render_messages
    from weaver.generate.engine import load_generator
    from weaver.generate.sampling import SamplingParams

    # sampled: greedy on the random tiny model repeats "\n", which would make the comparison weak
    args = ["generate", "--model", str(tiny_model_dir), "--backend", "transformers", "--prompt", "hello",
            "--max-new-tokens", "12",
            "--temperature", "1.0", "--seed", "3", "--no-safety"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    gen, tok, _ = load_generator(str(tiny_model_dir), "transformers", "none", "q8_0")
    prompt = render_messages(tok, [{"role": "user", "content": "hello"}])
    params = SamplingParams(max_new_tokens=12, temperature=1.0, repetition_penalty=1.1, seed=3)
    expected = "".join(gen.stream(prompt, params))
    assert expected.strip() and printed == expected + "\n"
