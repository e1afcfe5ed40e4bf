"""The generation engine on a tiny random Llama: batching, left padding, stop strings, n candidates."""

from __future__ import annotations

import pytest

from weaver.data.chat import render_messages
from weaver.generate.engine import Generator
from weaver.generate.sampling import SamplingParams

QUESTIONS = [
    "Hi",
    "Summarize: the council voted to build bike lanes downtown over three years.",
    "Write a headline about rain.",
    "Translate to French: good morning, how are you today, my friend?",
]


@pytest.fixture
def tiny_model(tiny_model):
    """The shared tiny Llama with larger random weights: the default init only ever emits newlines."""
    import torch

    model, tok = tiny_model
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.5, generator=gen)
    return model, tok


@pytest.fixture
def prompts(tokenizer):
    return [render_messages(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_batched_equals_one_at_a_time_under_greedy(tiny_model, prompts, penalty):
    model, tok = tiny_model
    params = SamplingParams(max_new_tokens=12, repetition_penalty=penalty)
    batched = Generator(model, tok, batch_size=4).generate(prompts, params)
    single = Generator(model, tok, batch_size=1).generate(prompts, params)
    lengths = {len(tok(p)["input_ids"]) for p in prompts}
    assert len(lengths) > 2  # the batch really needed padding
    assert [c[0].text for c in batched] == [c[0].text for c in single]
    assert all(c[0].completion_tokens > 0 for c in batched)


def test_repetition_penalty_ignores_padding(tiny_model, prompts):
    """The pad-blind penalty must give the same logits for a padded row as for the row alone."""
    import torch

    from weaver.generate.transformers_backend import _RepetitionPenalty

    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])  # row 1 is left-padded with token 0
    scores = torch.ones(2, 12)
    out = _RepetitionPenalty(2.0, [0, 2])(ids, scores.clone())
    assert out[1, 0] == 1.0  # the pad token is not penalised
    assert out[1, 9] == 0.5 and out[1, 10] == 0.5
    assert out[0, 5] == 0.5 and out[0, 9] == 1.0


def test_results_come_back_in_input_order(tiny_model, prompts):
    model, tok = tiny_model
    params = SamplingParams(max_new_tokens=6)
    forward = Generator(model, tok, batch_size=2).generate(prompts, params)
    backward = Generator(model, tok, batch_size=2).generate(prompts[::-1], params)
    assert [c[0].text for c in forward] == [c[0].text for c in backward][::-1]


def test_stop_string_cuts_the_text(tiny_model, prompts):
    model, tok = tiny_model
    full = Generator(model, tok).generate(prompts[:1], SamplingParams(max_new_tokens=16))[0][0]
    words = full.text.split()
    assert len(words) >= 3, full.text
    stop = words[2]
    cut = Generator(model, tok).generate(prompts[:1], SamplingParams(max_new_tokens=16, stop=[stop]))[0][0]
    assert cut.text == full.text[: full.text.find(stop)].strip()
    assert stop not in cut.text
    assert cut.finish_reason == "stop"
    assert full.finish_reason == "length" and full.completion_tokens == 16


def test_n_candidates_sampled_with_seed(tiny_model, prompts):
    model, tok = tiny_model
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, n=3, seed=7, repetition_penalty=1.1)
    gen = Generator(model, tok, batch_size=6)
    first = gen.generate(prompts[:2], params)
    again = gen.generate(prompts[:2], params)
    assert [len(c) for c in first] == [3, 3]
    assert [[x.text for x in c] for c in first] == [[x.text for x in c] for c in again]
    assert len({x.text for x in first[0]}) > 1  # sampling gives different candidates


def test_beam_search_returns_requested_candidates(tiny_model, prompts):
    model, tok = tiny_model
    out = Generator(model, tok).generate(prompts[:2], SamplingParams(max_new_tokens=5, num_beams=3, n=2))
    assert [len(c) for c in out] == [2, 2]
    assert all(c.completion_tokens <= 5 for cands in out for c in cands)


def test_stream_matches_generate(tiny_model, prompts):
    model, tok = tiny_model
    params = SamplingParams(max_new_tokens=10, repetition_penalty=1.2)
    gen = Generator(model, tok)
    streamed = "".join(gen.stream(prompts[1], params))
    assert streamed.strip() == gen.generate(prompts[1:2], params)[0][0].text
