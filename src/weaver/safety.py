"""The safety policy applied to every prompt and every output (CLI, Python API, HTTP API, apps).

    policy = load_policy()                      # packaged safety_policy.yaml, or load_policy("mine.yaml")
    d = policy.check_prompt("Mail me at ann@example.com")
    d.action, d.text                            # ("redact", "Mail me at [EMAIL]")
    d = policy.check_output("Here is how to make a bomb ...")
    d.action, d.text                            # ("block", "I can't help with that: it contains ...")

Configured in YAML (see safety_policy.yaml beside this module): blocklists for English (whole words,
case-insensitive) and Chinese (substrings), PII redaction (emails; phone numbers; ID numbers: the
Chinese 18-digit resident ID with its check digit, US SSNs; payment card numbers that pass the Luhn
check), refusal texts per language and an audit log. A blocked text is replaced by the refusal with its
reason; every decision goes to the JSONL audit log with counts and a hash, never the raw text or PII.

No toxicity classifier is included: none installs with its weights offline from PyPI in a usable form
(detoxify downloads its checkpoints at run time; toxic-comment-classifier and tox-block ship weights but
need TensorFlow and unpickle their tokenizers), so the policy relies on blocklists and PII rules.

A streamed reply is checked piece by piece with a `StreamGuard`: text is released only up to the last
character that cannot be part of an email or a digit group (a space, punctuation other than . _ % + - @,
a Chinese character) and redacted piece by piece, so PII that itself contains spaces (a phone number
written "555 123 4567") can be split between two released pieces and slip through, as can a run of more
than MAX_HOLD such characters; whole texts have no such gap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from weaver.config import read_yaml
from weaver.errors import ConfigError

log = logging.getLogger(__name__)
DEFAULT_POLICY = Path(__file__).with_name("safety_policy.yaml")
PII_KINDS = ("email", "phone", "id_number", "card")
_CJK = re.compile(r"[\u4e00-\u9fff]")
# Every part is bounded (RFC 5321: a local part has at most 64 characters, a label 63), so matching costs at most
# a few hundred steps per position: linear in the text. The unbounded `[...]+@` it replaces was quadratic in the
# length of a run without "@" (2 s at 50k characters, minutes at 1 MB) and froze the server's event loop.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,63}")
# Candidate digit runs: 13-19 digits, optionally grouped by single spaces or dashes (cards).
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_CN_ID = re.compile(r"(?<!\d)\d{17}[\dXx](?![\dXx])")
_SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
_PHONES = (
    re.compile(r"(?<![\d+])(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)"),  # Chinese mobile
    re.compile(r"(?<![\d+])0\d{2,3}-\d{7,8}(?!\d)"),  # Chinese landline 010-12345678
    re.compile(r"(?<![\w+])(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)"),  # North American
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\d{2,4}){2,5}(?!\d)"),  # other international, with +
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def luhn_ok(digits: str) -> bool:
    """True when a digit string passes the Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def cn_id_ok(number: str) -> bool:
    """True when an 18-character string is a Chinese resident ID with a valid check digit (GB 11643)."""
    if not re.fullmatch(r"\d{17}[\dXx]", number):
        return False
    check = "10X98765432"[sum(int(c) * w for c, w in zip(number[:17], _ID_WEIGHTS)) % 11]
    return number[17].upper() == check


def is_chinese(text: str) -> bool:
    """True when the text contains CJK ideographs (selects the Chinese refusal)."""
    return bool(_CJK.search(text))


@dataclass
class Decision:
    """What the policy decided about one text."""

    action: str
    """allow | redact (PII replaced) | block (text replaced by a refusal)."""
    text: str
    """The text to use from now on: unchanged, redacted, or the refusal."""
    reasons: list[str] = field(default_factory=list)
    """Why: blocklist matches and redaction counts, in words."""
    redactions: dict[str, int] = field(default_factory=dict)
    """PII kind -> number of spans replaced."""
    stage: str = "prompt"
    """prompt | output."""

    @property
    def blocked(self) -> bool:
        """True when the text was refused."""
        return self.action == "block"

    def to_dict(self) -> dict:
        """JSON-friendly form (used by the apps' --json output and the API)."""
        return {"action": self.action, "reasons": self.reasons, "redactions": self.redactions, "stage": self.stage}


class SafetyPolicy:
    """Blocklists + PII redaction + audit log, built from a policy mapping (see `load_policy`)."""

    def __init__(self, config: dict, source: str = "<dict>"):
        _validate(config, source)
        self.source = source
        lists = config.get("blocklist") or {}
        self.terms_en = [str(t).strip() for t in lists.get("en") or [] if str(t).strip()]
        self.terms_zh = [str(t).strip() for t in lists.get("zh") or [] if str(t).strip()]
        self._en = [(t, re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, t.split())) + r"(?!\w)", re.I))
                    for t in self.terms_en]
        pii = config.get("pii") or {}
        self.pii = {k: bool(pii.get(k, True)) for k in PII_KINDS}
        refusal = config.get("refusal") or {}
        self.refusal = {"en": refusal.get("en", "I can't help with that: {reason}."),
                        "zh": refusal.get("zh", "抱歉，无法处理该内容：{reason}。")}
        self.audit_path = _audit_path(config.get("audit_log", "auto"))
        self._lock = threading.Lock()

    def check_prompt(self, text: str, app: str = "") -> Decision:
        """Apply the policy to a prompt before it reaches a model.

        Args:
            text: the writer's text.
            app: who asks (newsroom, adcopy, support, api ...) for the audit log.
        Returns:
            A Decision; use `decision.text` in place of the original.
        """
        return self._check(text, "prompt", app)

    def check_output(self, text: str, app: str = "") -> Decision:
        """Apply the policy to a model output before it reaches the writer (same rules as prompts)."""
        return self._check(text, "output", app)

    def blocked_terms(self, text: str) -> list[str]:
        """Blocklist terms found in text (English whole words, Chinese substrings)."""
        found = [t for t, rx in self._en if rx.search(text)]
        return found + [t for t in self.terms_zh if t in text]

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """Replace PII with placeholders ([EMAIL], [CARD], [ID], [PHONE]).

        Returns:
            (redacted text, {kind: count}) with only kinds that occurred.
        """
        counts: dict[str, int] = {}

        def sub(rx: re.Pattern, kind: str, label: str, ok=None) -> None:
            nonlocal text

            def repl(m: re.Match) -> str:
                if ok is not None and not ok(m.group(0)):
                    return m.group(0)
                counts[kind] = counts.get(kind, 0) + 1
                return label

            text = rx.sub(repl, text)

        if self.pii["email"]:
            sub(_EMAIL, "email", "[EMAIL]")
        if self.pii["id_number"]:  # before cards: a valid resident ID is 18 digits too
            sub(_CN_ID, "id_number", "[ID]", cn_id_ok)
            sub(_SSN, "id_number", "[ID]")
        if self.pii["card"]:
            sub(_CARD, "card", "[CARD]", lambda s: luhn_ok(re.sub(r"\D", "", s)))
        if self.pii["phone"]:
            for rx in _PHONES:
                sub(rx, "phone", "[PHONE]")
        return text, counts

    def refuse(self, reason_en: str, reason_zh: str, zh: bool) -> str:
        """The refusal text for a reason, in the text's language."""
        return self.refusal["zh" if zh else "en"].format(reason=reason_zh if zh else reason_en)

    def _check(self, text: str, stage: str, app: str) -> Decision:
        text = text or ""
        terms = self.blocked_terms(text)
        if terms:
            quoted = ", ".join(f"'{t}'" for t in terms[:3])
            reason_en = f"the {'request' if stage == 'prompt' else 'reply'} contains blocked content ({quoted})"
            reason_zh = f"{'请求' if stage == 'prompt' else '回复'}包含屏蔽内容（{'、'.join(terms[:3])}）"
            decision = Decision("block", self.refuse(reason_en, reason_zh, is_chinese(text)),
                                [f"blocklist: {t}" for t in terms], {}, stage)
        else:
            redacted, counts = self.redact(text)
            reasons = [f"redacted {n} {kind}" for kind, n in counts.items()]
            decision = Decision("redact" if counts else "allow", redacted, reasons, counts, stage)
        self._audit(decision, text, app)
        return decision

    def _audit(self, decision: Decision, original: str, app: str) -> None:
        # The hash is of the redacted/refusal text: the log must never let anyone recover PII.
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "app": app,
            "stage": decision.stage,
            "action": decision.action,
            "reasons": decision.reasons,
            "redactions": decision.redactions,
            "chars": len(original),
            "sha256": hashlib.sha256(decision.text.encode()).hexdigest()[:16],
        }
        log.info("safety %s %s %s", decision.stage, decision.action, decision.reasons)
        if self.audit_path is None:
            return
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.audit_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.audit_path, "a", encoding="utf-8") as fh:
                fh.write(line)


def _audit_path(value) -> Path | None:
    if value is None or value is False or str(value).lower() in ("null", "none", "off", ""):
        return None
    if str(value) == "auto":
        from weaver.files import weaver_home

        return weaver_home() / "logs" / "safety-audit.jsonl"
    return Path(value).expanduser()


def _validate(config: dict, source: str) -> None:
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: a safety policy must be a YAML mapping with blocklist, pii, refusal, audit_log")
    unknown = set(config) - {"blocklist", "pii", "refusal", "audit_log"}
    if unknown:
        raise ConfigError(f"{source}: unknown safety policy key(s) {sorted(unknown)}; valid: blocklist, pii, "
                          "refusal, audit_log")
    for key, allowed in (("blocklist", {"en", "zh"}), ("pii", set(PII_KINDS)), ("refusal", {"en", "zh"})):
        section = config.get(key) or {}
        if not isinstance(section, dict) or set(section) - allowed:
            raise ConfigError(f"{source}: '{key}' must be a mapping with keys from {sorted(allowed)}")
    for lang, msg in (config.get("refusal") or {}).items():
        if "{reason}" not in str(msg):
            raise ConfigError(f"{source}: refusal.{lang} must contain the placeholder {{reason}}")


def load_policy(path: str | os.PathLike | None = None, audit_log: str | None = None) -> SafetyPolicy:
    """Load a safety policy from YAML.

    Args:
        path: policy file; default: $WEAVER_SAFETY when set, else the packaged safety_policy.yaml.
        audit_log: override the policy's audit_log (a path, "auto" or "off").
    Returns:
        The SafetyPolicy.
    Raises:
        ConfigError: missing file, invalid YAML or an unknown key.
    """
    p = Path(path or os.environ.get("WEAVER_SAFETY") or DEFAULT_POLICY).expanduser()
    if not p.is_file():
        raise ConfigError(f"safety policy {str(p)!r} does not exist: pass an existing YAML file to --safety")
    config = read_yaml(p, "in the safety policy ")
    if audit_log is not None and isinstance(config, dict):
        config = {**config, "audit_log": audit_log}
    return SafetyPolicy(config, str(p))


def permissive_policy() -> SafetyPolicy:
    """A policy that allows everything and logs nothing (for apps called while --no-safety is given)."""
    return SafetyPolicy({"pii": {k: False for k in PII_KINDS}, "audit_log": None}, "<--no-safety>")


# Characters PII is written with (emails, digit groups); text is released up to the last other character.
_PII_TAIL = re.compile(r"[A-Za-z0-9._%+@\-]*$")
MAX_HOLD = 64
"""A tail of PII characters longer than this is released except its last MAX_HOLD // 2 characters."""


class StreamGuard:
    """One streamed choice: holds text back to a whitespace boundary, redacts it, spots blocked text."""

    def __init__(self, policy: SafetyPolicy):
        self.policy = policy
        self.text = ""
        self.sent = 0
        self.refusal: str | None = None

    def push(self, piece: str) -> str:
        """Add a piece; returns the (redacted) text to send now, "" when held back or blocked."""
        self.text += piece
        if self.policy.blocked_terms(self.text):
            self.refusal = self.policy.check_output(self.text, app="api").text
            return ""
        end = _PII_TAIL.search(self.text, self.sent).start()
        if len(self.text) - end > MAX_HOLD:
            end = len(self.text) - MAX_HOLD // 2
        return self._release(end) if end > self.sent else ""

    def flush(self) -> str:
        """The rest of the text (redacted); logs the decision on the whole choice."""
        self.policy.check_output(self.text, app="api")
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        segment, self.sent = self.text[self.sent : end], end
        return self.policy.redact(segment)[0] if segment else ""
