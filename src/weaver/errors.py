"""User-facing errors: one sentence saying what is wrong and what to do.

The CLI prints a `WeaverError` as `error: <message>` and exits non-zero, never with a traceback.
Anything else that escapes is a bug in Weaver, and the CLI says so.
"""

from __future__ import annotations


class WeaverError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""

    exit_code = 2


class ConfigError(WeaverError):
    """A configuration value or key is invalid."""


class ModelNotFoundError(WeaverError):
    """A model name, path or hub id cannot be resolved to local weights."""


class DataError(WeaverError):
    """Input data is malformed; the message names the file, line and field."""

    exit_code = 3


class DiskFullError(WeaverError, OSError):
    """A save failed because the disk is full; what was saved before is intact."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def server_error_message(resp) -> str:
    """The message of an OpenAI-style error reply ({"error": {"message": ...}}), else the start of its body."""
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]
