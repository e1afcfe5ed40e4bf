"""CLI: verbs are listed; user errors print one sentence and exit non-zero without a traceback."""

import subprocess
import sys

import pytest

from weaver.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "weaver.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_verbs():
    out = _run("--help")
    assert out.returncode == 0
    for verb in ("models", "generate"):
        assert verb in out.stdout


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


def test_generate_with_tiny_model(tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "hello", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.endswith("\n")
