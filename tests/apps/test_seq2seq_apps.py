"""The apps on an encoder-decoder model (tiny random T5): candidates ranked by their teacher-forced likelihood."""

from __future__ import annotations

import torch

from weaver.apps.adcopy import AdRequest, build_record, generate_adcopy
from weaver.apps.source import LocalSource
from weaver.safety import load_policy


def test_t5_loglik_is_the_mean_target_log_probability(tiny_t5_dir):
    source = LocalSource(str(tiny_t5_dir), backend="auto")  # auto: transformers for an encoder-decoder model
    assert source.supports_loglik and source.generator.backend.name == "transformers"
    record = build_record(AdRequest(product="a white cotton shirt"))
    got = source.loglik(record, "adcopy", ["Soft cotton shirts.", ""])
    tok, model = source.tokenizer, source.generator.model
    src = torch.tensor([tok(source.prompt(record, "adcopy"), add_special_tokens=False)["input_ids"]
                        + [tok.eos_token_id]])
    labels = torch.tensor([tok("Soft cotton shirts.", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        expected = -float(model(input_ids=src, labels=labels).loss)
    assert abs(got[0] - expected) < 1e-4 and got[1] == float("-inf")


def test_t5_adcopy_gives_ranked_candidates(tiny_t5_dir):
    source = LocalSource(str(tiny_t5_dir))
    cands = generate_adcopy(source, AdRequest(product="a white cotton shirt", keywords=["cotton"]), n=3,
                            policy=load_policy(audit_log="off"), max_new_tokens=8)
    assert 1 <= len(cands) <= 3 and all(0 < c.likelihood <= 1 for c in cands)
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
