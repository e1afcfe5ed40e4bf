"""Requantise an f16 GGUF to Q4_K_M with llama.cpp's own quantisation kernels (from the xllamacpp wheel).

    requantize_q4_k_m(Path("model-f16.gguf"), Path("model-q4_k_m.gguf"))

The gguf package has no k-quant encoder, and xllamacpp binds llama.cpp's server but not its quantiser. Its
library does export ggml's C function `ggml_quantize_chunk` (the kernel llama-quantize runs for every tensor),
so this module calls it through ctypes and makes llama-quantize's per-tensor choice for Q4_K_M
(`llama_tensor_get_type` in llama.cpp's llama-quant.cpp, without an importance matrix): Q6_K for the output
matrix (the token embedding when it is tied) and for attn_v / ffn_down in the layers `use_more_bits` picks,
Q4_K elsewhere; a row length that is not a multiple of 256 falls back as llama.cpp does (Q4_K -> Q5_0,
Q6_K -> Q8_0, then f16). 1-D tensors and norms stay f32; metadata is copied.
"""

from __future__ import annotations

import ctypes
import functools
import re
from pathlib import Path

import numpy as np

from weaver.errors import WeaverError

QK_K = 256  # k-quant super-block size
_FALLBACK = {"Q4_K": "Q5_0", "Q6_K": "Q8_0", "Q5_0": "F16", "Q8_0": "F16"}
_SKIP_KEYS = ("GGUF.", "general.architecture", "general.file_type")


@functools.cache
def _ggml():
    """llama.cpp's ggml inside the xllamacpp extension module, with `ggml_quantize_chunk` typed."""
    import xllamacpp.xllamacpp as ext

    lib = ctypes.CDLL(ext.__file__)
    fn = lib.ggml_quantize_chunk
    # size_t ggml_quantize_chunk(enum ggml_type, const float *src, void *dst, int64_t start, int64_t nrows,
    #                            int64_t n_per_row, const float *imatrix)
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_void_p]
    fn.restype = ctypes.c_size_t
    return fn


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's layer pick for the extra bits of *_M k-quants: the first and last eighth, every third between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def q4_k_m_type(name: str, n_per_row: int, n_layers: int, has_output: bool) -> str:
    """The GGML type name llama-quantize gives a 2-D tensor in a Q4_K_M file."""
    layer = re.match(r"blk\.(\d+)\.", name)
    if name == "output.weight" or (name == "token_embd.weight" and not has_output):
        qtype = "Q6_K"
    elif layer and name.endswith(("attn_v.weight", "ffn_down.weight")) and use_more_bits(int(layer[1]), n_layers):
        qtype = "Q6_K"
    else:
        qtype = "Q4_K"
    import gguf

    while qtype != "F16" and n_per_row % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]:
        qtype = _FALLBACK[qtype]
    return qtype


def quantize_rows(data: np.ndarray, qtype) -> np.ndarray:
    """Rows of float weights (nrows, n_per_row) as ggml blocks of `qtype` (uint8, one row of blocks per row)."""
    import gguf

    src = np.ascontiguousarray(data, dtype=np.float32)
    nrows, n_per_row = src.shape
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    out = np.empty((nrows, n_per_row // block * size), dtype=np.uint8)
    written = _ggml()(int(qtype), src.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, None)
    if written != out.size:
        raise WeaverError(f"llama.cpp's quantiser wrote {written} bytes for a {qtype.name} tensor, expected {out.size}")
    return out


def requantize_q4_k_m(src: Path, dst: Path) -> None:
    """Write `dst`, the f16/f32 GGUF `src` with its matrices requantised as llama-quantize's Q4_K_M would.

    Raises:
        WeaverError: a source tensor that is already quantised (requantising would compound the error).
    """
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if not key.startswith(_SKIP_KEYS):
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    names = {t.name for t in reader.tensors}
    n_layers = 1 + max((int(m[1]) for n in names if (m := re.match(r"blk\.(\d+)\.", n))), default=0)
    for t in reader.tensors:
        data = np.asarray(t.data)
        if t.tensor_type not in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32):
            raise WeaverError(f"{src.name}: tensor {t.name} is {t.tensor_type.name}; Q4_K_M needs an f16 source")
        if data.ndim == 1 or t.name.endswith("_norm.weight"):
            writer.add_tensor(t.name, data.astype(np.float32))
            continue
        rows = data.reshape(-1, data.shape[-1])
        qtype = gguf.GGMLQuantizationType[q4_k_m_type(t.name, rows.shape[1], n_layers, "output.weight" in names)]
        if qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(t.name, data.astype(np.float16))
        else:
            blocks = quantize_rows(rows, qtype).reshape(*data.shape[:-1], -1)
            writer.add_tensor(t.name, blocks, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
