"""Merge and GGUF export on a tiny random Llama run (no llama.cpp needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from weaver.errors import WeaverError
from weaver.models.export import _permute, export_gguf, merge_run


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merge_gives_plain_transformers_folder_with_same_logits(tiny_run, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = merge_run(tiny_run, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, no peft
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = torch.tensor([tok("Summarise: the meeting moved to Friday.")["input_ids"]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with_adapter = PeftModel.from_pretrained(base, tiny_run / "adapter").eval()
    expected = _logits(with_adapter, ids)
    torch.testing.assert_close(_logits(merged, ids), expected, atol=1e-4, rtol=1e-4)
    # the adapter is not a no-op: the base alone gives different logits
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert (_logits(plain, ids) - expected).abs().max() > 1e-3
    info = json.loads((out / "weaver-export.json").read_text())
    assert info["base"] == str(tiny_model_dir)


def test_merge_refuses_non_empty_out_and_models_without_adapter(tiny_run, tiny_model_dir, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(WeaverError, match="not empty"):
        merge_run(tiny_run, tmp_path / "busy")
    with pytest.raises(WeaverError, match="no adapter"):
        merge_run(tiny_model_dir, tmp_path / "x")


def test_permute_matches_llama_cpp_rotary_layout():
    # one head of dim 4: HF rows [r0, r1 | r2, r3] (rotate-half pairs (r0,r2), (r1,r3)) -> interleaved
    w = torch.arange(4.0).reshape(4, 1)
    assert _permute(w, 1).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]


def test_gguf_has_llama_metadata_and_tokenizer(tiny_gguf):
    import gguf

    fields = gguf.GGUFReader(tiny_gguf).fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].contents() == 2
    assert fields["llama.attention.head_count_kv"].contents() == 2
    assert fields["llama.rope.dimension_count"].contents() == 16
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert tokens[1] == "<|im_start|>" and len(tokens) == 49152
    assert len(fields["tokenizer.ggml.merges"].data) > 40000
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_holds_merged_weights(tiny_run, tiny_gguf, tmp_path, quant):
    import gguf

    from weaver.models.loading import load_model

    path = tiny_gguf if quant == "f16" else export_gguf(tiny_run, tmp_path / "tiny-q8_0.gguf", quant)
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert "output.weight" not in tensors  # tied embeddings are shared, as llama.cpp expects
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    want = gguf.GGMLQuantizationType.F16 if quant == "f16" else gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.ffn_down.weight"].tensor_type == want
    # the stored weights are the merged ones (dequantised back, within the format's precision)
    state = load_model(tiny_run, merge=True)[0].state_dict()
    base = load_model(tiny_run, with_adapter=False)[0].state_dict()
    for hf, name in [("mlp.down_proj", "ffn_down"), ("self_attn.v_proj", "attn_v")]:
        expect = state[f"model.layers.0.{hf}.weight"].numpy()
        t = tensors[f"blk.0.{name}.weight"]
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(expect.shape)
        err = np.abs(got - expect).max()
        assert err < (2e-4 if quant == "f16" else 2e-3)
        assert err < np.abs(base[f"model.layers.0.{hf}.weight"].numpy() - expect).max() / 4


def test_gguf_rejects_bad_quant_and_suffix(tiny_run, tmp_path):
    with pytest.raises(WeaverError, match="--quant"):
        export_gguf(tiny_run, tmp_path / "x.gguf", "q3")
    with pytest.raises(WeaverError, match=".gguf"):
        export_gguf(tiny_run, tmp_path / "x.bin", "f16")


def test_cli_export_merge_and_errors(tiny_run, tmp_path, capsys):
    from weaver.cli import main

    assert main(["export", str(tiny_run), "--merge", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert "merged model written" in capsys.readouterr().out
    # a second export into the same folder is refused with one line, no traceback
    assert main(["export", str(tiny_run), "--merge", "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.startswith("error: --out")
    assert main(["export", str(tmp_path / "nope"), "--gguf", "--out", str(tmp_path / "x.gguf")]) == 2
