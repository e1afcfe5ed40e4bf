"""The generation engine on encoder-decoder models (tiny random T5 and BART): batching, sampling, n, stop, prefix."""

from __future__ import annotations

import pytest
import torch

from weaver.generate.engine import Generator, choose_backend
from weaver.generate.sampling import SamplingParams
from weaver.models.loading import load_model

PROMPTS = ["### Instruction:\nSummarize the text.\n\nThe harbour reopened on Monday after the storm.\n\n"
           "### Response:\n", "Headline: rain", "A third prompt, of medium length, about trains."]


@pytest.fixture(params=["t5", "bart"])
def seq2seq_dir(request, tiny_t5_dir, tiny_bart_dir):
    return tiny_t5_dir if request.param == "t5" else tiny_bart_dir


def _greedy_reference(model, tok, prompt: str, steps: int) -> list[int]:
    """Greedy decoding by hand: the encoder on the source + EOS, then argmax of the decoder's last logits."""
    src = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]])
    dec = torch.tensor([[model.config.decoder_start_token_id]])
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(input_ids=src, decoder_input_ids=dec).logits[0, -1].argmax()
            dec = torch.cat([dec, nxt.view(1, 1)], dim=1)
    return dec[0, 1:].tolist()


def test_batched_greedy_equals_each_prompt_alone_and_plain_decoding(seq2seq_dir):
    model, tok = load_model(seq2seq_dir)
    gen = Generator(model, tok, batch_size=8)
    params = SamplingParams(max_new_tokens=6, repetition_penalty=1.0)
    batched = [o[0] for o in gen.generate(PROMPTS, params)]
    alone = [gen.generate([p], params)[0][0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in alone]  # right-padded sources: no change in a batch
    expected = tok.decode(_greedy_reference(model, tok, PROMPTS[0], 6), skip_special_tokens=True).strip()
    assert batched[0].text == expected and batched[0].completion_tokens == 6
    assert batched[0].prompt_tokens == len(tok(PROMPTS[0], add_special_tokens=False)["input_ids"]) + 1  # + EOS


def test_sampling_n_candidates_share_one_encoder_pass_and_are_seeded(tiny_t5_dir):
    model, tok = load_model(tiny_t5_dir)
    gen = Generator(model, tok, batch_size=8)
    calls = []
    hook = model.get_encoder().register_forward_hook(lambda mod, args, out: calls.append(args))
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    try:
        first = gen.generate(PROMPTS[:2], params)
    finally:
        hook.remove()
    assert len(calls) == 1  # one batch, the encoder run once for 2 prompts x 3 candidates
    assert [len(c) for c in first] == [3, 3]
    assert len({c.text for c in first[0]}) > 1  # sampled candidates differ
    again = gen.generate(PROMPTS[:2], params)
    assert [[c.text for c in o] for o in again] == [[c.text for c in o] for o in first]


def test_stop_string_stream_and_beams(seq2seq_dir):
    model, tok = load_model(seq2seq_dir)
    gen = Generator(model, tok)
    full = gen.generate([PROMPTS[0]], SamplingParams(max_new_tokens=8))[0][0]
    raw = "".join(gen.stream(PROMPTS[0], SamplingParams(max_new_tokens=8)))
    assert raw.strip() == full.text and len(raw) >= 4
    stop = raw[len(raw) // 2 :][:3]  # a piece from the middle of the reply
    cut = gen.generate([PROMPTS[0]], SamplingParams(max_new_tokens=8, stop=[stop]))[0][0]
    assert cut.finish_reason == "stop" and cut.text == raw[: raw.index(stop)].strip()
    beams = gen.generate(PROMPTS[:2], SamplingParams(max_new_tokens=5, num_beams=3, n=2))
    assert [len(b) for b in beams] == [2, 2] and all(c.completion_tokens >= 1 for b in beams for c in b)


def test_auto_backend_is_transformers_for_seq2seq(tiny_t5_dir, tiny_bart_dir):
    for folder in (tiny_t5_dir, tiny_bart_dir):
        name, why = choose_backend("auto", folder)
        assert name == "transformers" and "encoder-decoder" in why


def test_prefix_tuned_seq2seq_run_decodes_with_its_prefix(tiny_t5_dir, tmp_path):
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from weaver.config import RunConfig, save_resolved

    torch.manual_seed(3)
    peft_model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir),
                                PrefixTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=4))
    with torch.no_grad():
        for p in peft_model.prompt_encoder.parameters():
            p.normal_(0.0, 2.0)  # a prefix that changes the replies
    run = tmp_path / "run"
    peft_model.save_pretrained(run / "adapter")
    cfg = RunConfig()
    cfg.model.name = str(tiny_t5_dir)
    save_resolved(cfg, run)
    model, tok = load_model(run)
    params = SamplingParams(max_new_tokens=5, repetition_penalty=1.0)
    out = Generator(model, tok).generate([PROMPTS[0]], params)[0][0]
    expected = tok.decode(_greedy_reference(model, tok, PROMPTS[0], 5), skip_special_tokens=True).strip()
    base_model, _ = load_model(tiny_t5_dir)
    base = Generator(base_model, tok).generate([PROMPTS[0]], params)[0][0]
    assert out.text == expected and out.text != base.text
