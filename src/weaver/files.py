"""Small shared helpers: the cache folder, file hashes, atomic writes and the versions a result depends on.

    from weaver.files import atomic_write_text, sha256_file, versions, weaver_home
    atomic_write_text(weaver_home() / "note.txt", "hello\n")   # temporary name, fsync, rename
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from pathlib import Path


def weaver_home() -> Path:
    """The cache root: $WEAVER_HOME, default ~/.cache/weaver."""
    return Path(os.environ.get("WEAVER_HOME") or Path.home() / ".cache" / "weaver")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file under a temporary name, fsync it, then rename, so a crash never leaves half a file."""
    with atomic_writer(path) as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike):
    """A text file opened under a temporary name, written piece by piece, fsynced and renamed onto `path` when the
    block ends; an exception removes the temporary file and leaves `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide a result, for reproducibility records."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("weaver", "torch", "transformers", "peft", "accelerate", "tokenizers", "gguf"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
