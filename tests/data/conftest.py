"""Fixtures for the data tests: a plain (no chat template) copy of the real tokenizer."""

from __future__ import annotations

import copy

import pytest


@pytest.fixture(scope="session")
def plain_tokenizer(tokenizer):
    """The SmolLM2 tokenizer with its chat template removed, as a base model's tokenizer would be."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


@pytest.fixture(params=["chat", "plain"])
def any_tokenizer(request, tokenizer, plain_tokenizer):
    """Both kinds of tokenizer: with a chat template and without."""
    return tokenizer if request.param == "chat" else plain_tokenizer
