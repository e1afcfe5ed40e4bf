"""Customer support grounded in a knowledge base: retrieve, answer from the passages, cite, or hand over.

    weaver support index --kb faq.jsonl --out kb.sqlite
    weaver support ask --index kb.sqlite --model smollm2-135m-instruct "I forgot my Gmail password"

    reply = answer(source, Index("kb.sqlite"), "I forgot my Gmail password")
    reply.text, reply.citations, reply.handed_over

The question passes the safety policy first (PII redacted, blocklisted requests refused). The top-k
passages (weaver.apps.retrieval) go into the prompt with their ids, and the reply (task support_reply,
rendered by weaver.data.tasks.render_prompt) is asked to use only them and cite ids like [faq-1665].
The reply lists as Sources only the passages it cites (`citations`); `passages` is what the model was
given. A reply that cites none says so in its text and has `uncited` set, so an agent checks it first.
Each reply sentence is tied to the passage sentence that supports it best (weaver.eval.explain, in
`grounding`); when fewer than half of its sentences are supported the reply says so and `needs_review` is
set (as it is for an uncited reply). When
the retrieval confidence (top cosine similarity) is below `min_confidence` (default 0.3: on the test
FAQ every paraphrased question scored >= 0.42 and every off-topic one <= 0.17) the app does not generate:
it answers that a human colleague will take over. The reply passes the safety policy before it is shown.
Served at POST /v1/weaver/support by weaver.serve.app_routes.support_router.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from weaver.apps.retrieval import Hit, Index
from weaver.data.records import Record
from weaver.safety import SafetyPolicy, is_chinese, load_policy

MIN_CONFIDENCE = 0.3
CITATION = r"\[[\w.-]+\]"
"""A citation mark in a reply ([faq-1665]): not a claim, so removed before a sentence is grounded."""
HANDOVER = {
    "en": "I'm not sure I can answer this correctly, so I'm handing your question over to a human colleague "
          "who will get back to you shortly.",
    "zh": "这个问题我无法确定正确答案，已为您转接人工客服，同事会尽快回复您。",
}
UNGROUNDED = {
    "en": "Most of this reply is not supported by the knowledge base: check it before sending it.",
    "zh": "这条回复的大部分内容没有知识库依据，发送前请核实。",
}
NO_CITATION = {
    "en": "Sources: none cited. Check this reply against the knowledge base before sending it.",
    "zh": "来源：未引用任何段落。发送前请对照知识库核实这条回复。",
}
INSTRUCTION = {
    "en": "You are a customer support agent. Answer the customer's message using only the knowledge-base "
          "passages below, and cite the ids of the passages you use in square brackets, like [{example}].",
    "zh": "你是一名客服人员。请只根据下面的知识库段落回复客户，并用方括号注明所用段落的编号，例如[{example}]。",
}


@dataclass
class SupportReply:
    """The answer to one customer message."""

    text: str
    citations: list[str] = field(default_factory=list)
    handed_over: bool = False
    confidence: float = 0.0
    passages: list[Hit] = field(default_factory=list)
    safety: list[dict] = field(default_factory=list)
    uncited: bool = False
    """True when the model answered but cited none of the passages it was given."""
    grounding: dict | None = None
    """Per reply sentence: the passage (id) and sentence that support it best, and whether that suffices."""
    explanation: list[dict] | None = None
    """With answer(explain=True): weaver.eval.explain.explain_spans of the reply (offsets index `text`, sources
    the passages' text); empty when nothing was generated (handed over, blocked)."""

    @property
    def needs_review(self) -> bool:
        """An answered reply that cites nothing or rests mostly on nothing in the knowledge base."""
        faith = (self.grounding or {}).get("faithfulness")
        return not self.handed_over and bool(self.text) and (self.uncited or (faith is not None and faith < 0.5))

    def to_dict(self) -> dict:
        """JSON form (CLI --json and the HTTP API)."""
        return {
            "reply": self.text, "citations": self.citations, "uncited": self.uncited,
            "needs_review": self.needs_review, "grounding": self.grounding,
            "handed_over": self.handed_over,
            "confidence": round(self.confidence, 4), "safety": self.safety,
            "passages": [{"id": h.id, "title": h.title, "text": h.text, "score": round(h.score, 4)}
                         for h in self.passages],
            **({"explanation": self.explanation} if self.explanation is not None else {}),
        }


def build_record(question: str, hits: list[Hit], lang: str = "en") -> Record:
    """The support_reply Record: grounding instruction, then the passages with ids, then the message."""
    block = "\n\n".join(f"[{h.id}] {h.title}\n{h.text}" for h in hits)
    label = ("知识库段落", "客户消息") if lang == "zh" else ("Knowledge-base passages", "Customer message")
    return Record(
        id="support", instruction=INSTRUCTION[lang].format(example=hits[0].id if hits else "id"),
        input=f"{label[0]}:\n{block}\n\n{label[1]}:\n{question}", output="", source="support",
    )


def answer(source, index: Index, question: str, k: int = 3, min_confidence: float = MIN_CONFIDENCE,
           mode: str = "hybrid", policy: SafetyPolicy | None = None, max_new_tokens: int | None = None,
           explain: bool = False) -> SupportReply:
    """Answer a customer message from the knowledge base, or hand it over to a human.

    Args:
        source: weaver.apps.source LocalSource or ServerSource.
        index: the knowledge-base index.
        question: the customer's message.
        k: passages retrieved and put in the prompt.
        min_confidence: hand over when the retrieval confidence is below this.
        mode: hybrid | embedding | lexical retrieval.
        policy: safety policy (default: load_policy()).
        max_new_tokens: cap on the reply length (default: the support_reply task's).
        explain: fill `explanation` (per reply sentence, with offsets, the passage sentences supporting it).
    Returns:
        A SupportReply.
    """
    from weaver.apps.source import default_params

    policy = policy or load_policy()
    lang = "zh" if is_chinese(question) else "en"
    gate = policy.check_prompt(question, app="support")
    explanation = [] if explain else None  # until the model writes a reply there is nothing to explain
    if gate.blocked:
        return SupportReply(gate.text, safety=[gate.to_dict()], explanation=explanation)
    hits, confidence = index.search(gate.text, k=k, mode=mode)
    if confidence < min_confidence:
        return SupportReply(HANDOVER[lang], handed_over=True, confidence=confidence, passages=hits,
                            safety=[gate.to_dict()], explanation=explanation)
    params = default_params("support_reply", max_new_tokens)
    text = source.generate([build_record(gate.text, hits, lang)], "support_reply", params)[0][0]
    ids = [h.id for h in hits]
    cited = [i for i in ids if f"[{i}]" in text or re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", text)]
    out = policy.check_output(text, app="support")
    if out.blocked:
        return SupportReply(out.text, confidence=confidence, passages=hits, safety=[gate.to_dict(), out.to_dict()],
                            explanation=explanation)
    if cited:
        sources = ("来源" if lang == "zh" else "Sources") + ": " + ", ".join(f"[{i}]" for i in cited)
    else:
        sources = NO_CITATION[lang]
    grounding = ground_reply(out.text, hits, lang)
    if cited and grounding["faithfulness"] is not None and grounding["faithfulness"] < 0.5:
        sources += "\n" + UNGROUNDED[lang]
    if explain:
        from weaver.eval.explain import explain_spans

        explanation = explain_spans(out.text, {h.id: h.text for h in hits}, lang, key="passage", ignore=CITATION)
    return SupportReply(f"{out.text}\n\n{sources}", cited, False, confidence, hits,
                        [gate.to_dict(), out.to_dict()], uncited=not cited, grounding=grounding,
                        explanation=explanation)


def ground_reply(text: str, hits: list[Hit], lang: str) -> dict:
    """Each reply sentence with the passage sentence that supports it best (ids kept), and the supported share."""
    from weaver.eval.explain import explain, split_sentences

    owners, sentences = [], []
    for h in hits:
        for sent in split_sentences(h.text, lang):
            owners.append(h.id)
            sentences.append(sent)
    ex = explain("\n".join(sentences), re.sub(CITATION, "", text), lang=lang, source_sentences=sentences)
    return {"faithfulness": ex.faithfulness, "sentences": [
        {"text": s.text, "supported": s.supported, "score": round(s.score, 4),
         "passage": owners[s.sources[0][0]] if s.sources else None,
         "source": sentences[s.sources[0][0]] if s.sources else None,
         "unsupported_entities": s.unsupported_entities} for s in ex.sentences]}

