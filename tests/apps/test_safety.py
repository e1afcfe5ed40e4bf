"""Safety policy: PII redaction and blocklists in English and Chinese, refusals, audit log without PII."""

from __future__ import annotations

import json

import pytest

from weaver.errors import ConfigError
from weaver.safety import SafetyPolicy, cn_id_ok, load_policy, luhn_ok


@pytest.fixture
def policy(tmp_path):
    return load_policy(audit_log=str(tmp_path / "audit.jsonl"))


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert cn_id_ok("11010519491231002X") and not cn_id_ok("110105194912310021")


def test_english_pii_in_prompt_is_redacted(policy):
    d = policy.check_prompt(
        "I'm ann.lee@example.co.uk, call +1 (415) 555-0134; card 4111 1111 1111 1111; SSN 078-05-1120"
    )
    assert d.action == "redact"
    assert d.text == "I'm [EMAIL], call [PHONE]; card [CARD]; SSN [ID]"
    assert d.redactions == {"email": 1, "phone": 1, "card": 1, "id_number": 1}


def test_chinese_pii_in_output_is_redacted(policy):
    d = policy.check_output("请拨打13812345678或010-12345678，身份证11010519491231002X，邮箱zhang@qq.com")
    assert d.action == "redact" and d.stage == "output"
    assert d.text == "请拨打[PHONE]或[PHONE]，身份证[ID]，邮箱[EMAIL]"


def test_numbers_that_are_not_pii_are_kept(policy):
    text = "Order 4111 1111 1111 1112 (fails Luhn), ID 110105194912310021 (bad check digit), year 2024-05-01"
    d = policy.check_prompt(text)
    assert d.action == "allow" and d.text == text


@pytest.mark.parametrize(
    "text, lang",
    [("Explain how to MAKE  a Bomb at home", "en"), ("请告诉我如何制造炸弹", "zh")],
)
def test_blocklisted_content_is_refused_in_its_language(policy, text, lang):
    d = policy.check_output(text)
    assert d.blocked
    assert ("抱歉" in d.text) == (lang == "zh")
    assert ("bomb" in d.text.lower()) or ("炸弹" in d.text)  # the reason names the term
    assert d.reasons


def test_english_terms_match_whole_words_only(policy):
    assert not policy.check_prompt("The pipe bombastic review").blocked
    assert policy.check_prompt("a pipe bomb.").blocked


def test_audit_log_has_every_decision_and_no_pii(policy, tmp_path):
    policy.check_prompt("mail ann@example.com", app="test")
    policy.check_output("fine text", app="test")
    policy.check_output("去死吧", app="test")
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["action"] for x in lines] == ["redact", "allow", "block"]
    assert all(x["app"] == "test" for x in lines)
    assert "ann@example.com" not in (tmp_path / "audit.jsonl").read_text()


def test_yaml_policy_is_configurable(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("blocklist: {en: [secret project]}\npii: {phone: false}\naudit_log: off\n")
    p = load_policy(path)
    assert p.check_prompt("the Secret Project launches").blocked
    assert p.check_prompt("call 415-555-0134").action == "allow"  # phone redaction switched off
    assert p.check_prompt("a@b.io").text == "[EMAIL]"
    assert not p.check_prompt("make a bomb").blocked  # this policy's own list replaces the default


def test_bad_policy_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown safety policy key"):
        SafetyPolicy({"blocklists": {}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("blocklist: [oops\n")
    with pytest.raises(ConfigError, match="bad.yaml:"):
        load_policy(bad)
