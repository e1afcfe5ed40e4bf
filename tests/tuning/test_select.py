"""weaver data select: inputs are ranked by uncertainty (sample disagreement, token entropy) and picked for
diversity (embedding distance), and every pick says why."""

from __future__ import annotations

import json

import numpy as np

from weaver.config import DataConfig
from weaver.data.records import Record
from weaver.generate import Completion
from weaver.tuning.select import pick_diverse, select_inputs, write_selection


class Scripted:
    def __init__(self, tok, answers):
        self.tok, self.answers = tok, answers

    def generate(self, prompts, params, progress=None):
        return [[Completion(t, 1, 1, "stop") for t in self.answers(p)[: params.n]] for p in prompts]


def test_diversity_prefers_a_distant_input_over_the_twin_of_a_pick():
    vectors = np.array([[1.0, 0.0], [0.999, 0.045], [0.0, 1.0]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order, dist, owner = pick_diverse(np.array([1.0, 0.9, 0.5]), vectors, 2)
    assert order == [0, 2]  # the twin (1) is more uncertain than 2 but adds nothing new
    assert dist[1] > 0.9 and list(owner) == [0, 0, 1]


def test_select_ranks_the_input_whose_samples_disagree_first_and_writes_reasons(tiny_model, tmp_path):
    model, tok = tiny_model
    records = [Record(f"in{i}", "", f"customer message {i} about the printer", "") for i in range(5)]

    def answers(prompt):
        if "message 3 " in prompt:  # the model cannot make up its mind about input 3
            return ["refund the order", "the printer is broken forever", "call us on monday morning"]
        return ["please restart the printer"] * 3

    rows = select_inputs(records, Scripted(tok, answers), (model, tok), DataConfig(task="support_reply"), n=3, k=3,
                         use_embedder=False)
    assert len(rows) == 3 and rows[0]["id"] == "in3"
    first = rows[0]["meta"]["select"]
    assert first["rank"] == 1 and first["uncertainty_rank"] == 1 and first["disagreement"] > 0.5
    assert all(r["meta"]["select"]["disagreement"] == 0 for r in rows[1:])
    assert "uncertainty" in first["reason"] and "samples agree" in first["reason"]
    assert sum(r["meta"]["select"]["cluster_size"] for r in rows) == 5
    assert first["vectors"] == "the model's mean-pooled hidden states"
    path = write_selection(tmp_path / "to-label.jsonl", rows)
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert [w["id"] for w in written] == [r["id"] for r in rows] and all(w["output"] == "" for w in written)
