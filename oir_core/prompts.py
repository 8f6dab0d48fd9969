"""Guided Prompt Builder (ARCHITECTURE.md §4, notation; OIR §"guided prompts").

OIR edits each object separately, with a *guided prompt* ``G_k`` that is the original prompt ``P_o``
with only pair ``k``'s phrase replaced, and finishes with the *target prompt* ``P_t`` where every pair
is replaced. The search metric scores pair ``k`` against its *target phrase* alone (not ``P_t`` and not
``G_k``), so the plan also carries that text.

Example: ``"a dog sitting next to a gift"`` with ``dog → cat`` and ``gift → cake`` gives the guided
prompts ``"a cat sitting next to a gift"`` and ``"a dog sitting next to a cake"``, the target prompt
``"a cat sitting next to a cake"`` and the score texts ``["cat", "cake"]``.

Matching rules:

- whole words, case-insensitive: ``"cat"`` does not match inside ``"cathedral"``, ``"Dog"`` matches
  ``"dog"``. A phrase that starts (ends) with a non-word character such as ``"(red)"`` needs no word
  boundary on that side. Whitespace runs inside a phrase match any whitespace run in the prompt.
- everything outside the replaced spans is kept byte for byte; the target phrase is inserted exactly
  as given (after stripping surrounding whitespace), with no case adaptation.
- ``occurrence`` is **1-based** (``1`` = first occurrence), matching how people count words in a
  prompt; it is required when the source phrase occurs more than once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import OIRInputError

__all__ = ["EditPairText", "PromptPlan", "build_prompts", "check_target", "find_phrase", "phrase_pattern"]


@dataclass(frozen=True)
class EditPairText:
    """The text half of one edit pair.

    Attributes:
        source: the phrase of the original prompt that names the object (``"dog"``).
        target: the phrase it becomes (``"cat"``); also the text CLIP scores the region against.
        occurrence: which occurrence of ``source`` to replace, 1-based; ``None`` means "the only one".
        guided_prompt: an explicit guided prompt for this pair; when given, no matching is done for
            the pair's guided prompt (the target prompt may still need matching, see
            :func:`build_prompts`).
    """

    source: str
    target: str
    occurrence: int | None = None
    guided_prompt: str | None = None


@dataclass(frozen=True)
class PromptPlan:
    """Every prompt one OIR edit needs.

    Attributes:
        original: ``P_o``, used for inversion, re-inversion and as the negative prompt.
        target: ``P_t``, every pair replaced; conditions the final shared denoising.
        guided: ``G_k`` per pair, in pair order; conditions pair ``k``'s candidates and reassembly.
        score_texts: pair ``k``'s target phrase, the text of its CLIP editing score ``S_e``.
    """

    original: str
    target: str
    guided: list[str] = field(default_factory=list)
    score_texts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Case-insensitive whole-word pattern for ``phrase`` (already stripped, non-empty).

    A word boundary is only demanded on a side where the phrase itself begins/ends with a word
    character: ``\\b`` before ``"(red"`` would wrongly require a letter before the parenthesis.
    """
    parts = [re.escape(p) for p in phrase.split()]
    body = r"\s+".join(parts)
    left = r"(?<!\w)" if re.match(r"\w", phrase) else ""
    right = r"(?!\w)" if re.search(r"\w$", phrase) else ""
    return re.compile(left + body + right, re.IGNORECASE)


def find_phrase(
    prompt: str,
    phrase: str,
    occurrence: int | None = None,
    input_name: str = "source",
    occurrence_name: str = "occurrence",
) -> tuple[int, int]:
    """Locate one whole-word occurrence of ``phrase`` in ``prompt``.

    Args:
        prompt: the text to search.
        phrase: the phrase (surrounding whitespace ignored).
        occurrence: 1-based occurrence index, or ``None`` when the phrase must occur exactly once.
        input_name: the input named in errors about the phrase.
        occurrence_name: the input named in errors about ``occurrence``.

    Returns:
        ``(start, end)`` character span in ``prompt``.

    Raises:
        OIRInputError: the phrase is empty, missing, ambiguous, or ``occurrence`` is out of range.
    """
    needle = phrase.strip()
    if not needle:
        raise OIRInputError(input_name, phrase, "the phrase is empty", "type the words to replace")
    spans = [m.span() for m in phrase_pattern(needle).finditer(prompt)]
    if not spans:
        raise OIRInputError(
            input_name,
            phrase,
            f"not found as whole words in the prompt {prompt!r}",
            "use words that appear in the original prompt exactly (case does not matter), "
            "or give an explicit guided prompt and target prompt",
        )
    if occurrence is None:
        if len(spans) > 1:
            raise OIRInputError(
                input_name,
                phrase,
                f"occurs {len(spans)} times in the prompt {prompt!r}",
                f"set its occurrence to a number from 1 to {len(spans)} (1 = first)",
            )
        return spans[0]
    if isinstance(occurrence, bool) or not isinstance(occurrence, int):
        raise OIRInputError(
            occurrence_name,
            occurrence,
            "is not an integer",
            "give a whole number (1 = first occurrence) or leave it empty",
        )
    if not 1 <= occurrence <= len(spans):
        raise OIRInputError(
            occurrence_name,
            occurrence,
            f"out of range: {needle!r} occurs {len(spans)} time(s); occurrences are 1-based",
            f"use a number from 1 to {len(spans)}",
        )
    return spans[occurrence - 1]


def _replace_spans(prompt: str, replacements: list[tuple[tuple[int, int], str]]) -> str:
    """Replace non-overlapping spans; right to left so earlier offsets stay valid."""
    out = prompt
    for (start, end), text in sorted(replacements, key=lambda r: r[0][0], reverse=True):
        out = out[:start] + text + out[end:]
    return out


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise OIRInputError(name, value, "is not text", "give a string")
    stripped = value.strip()
    if not stripped:
        raise OIRInputError(name, value, "is empty", "type some words")
    return stripped


def check_target(source: str, target: Any, input_name: str = "target") -> str:
    """The stripped target phrase, refusing one that is empty or the same as ``source`` (any case).

    Either would run a whole edit that changes nothing, so each gets its own message.
    """
    if not isinstance(target, str) or not target.strip():
        raise OIRInputError(
            input_name,
            target,
            f"is empty: nothing says what {source.strip()!r} should become",
            "type the new object's words (e.g. 'cat' for 'dog')",
        )
    if target.strip().casefold() == source.strip().casefold():
        raise OIRInputError(
            input_name,
            target,
            f"is the same as its source {source.strip()!r}: this pair would change nothing",
            "type what the object should become, or remove the pair",
        )
    return target.strip()


def build_prompts(
    original: str, pairs: Sequence[EditPairText], target_prompt: str | None = None
) -> PromptPlan:
    """Build ``P_t``, every ``G_k`` and the score texts from ``P_o`` and the edit pairs.

    Matching (see module docstring) is needed for a pair's guided prompt unless the pair carries
    ``guided_prompt``, and for every pair when ``target_prompt`` is ``None`` (the target prompt is
    then ``P_o`` with all pairs replaced). With ``target_prompt`` given and an explicit
    ``guided_prompt`` on every pair, no matching happens at all.

    Args:
        original: ``P_o``.
        pairs: ``K >= 1`` edit pairs, in pair order.
        target_prompt: an explicit ``P_t``, or ``None`` to build it.

    Returns:
        The :class:`PromptPlan`.

    Raises:
        OIRInputError: empty prompt / phrases / pair list, a source phrase that is missing or
            ambiguous, or two pairs whose source spans overlap.
    """
    _check_text("original_prompt", original)
    if target_prompt is not None:
        _check_text("target_prompt", target_prompt)
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise OIRInputError(
            "pairs", pairs, "no edit pairs were given", "add at least one source → target pair"
        )

    spans: list[tuple[int, int] | None] = []
    targets: list[str] = []
    for k, pair in enumerate(pairs):
        if not isinstance(pair, EditPairText):
            raise OIRInputError(
                f"pairs[{k}]", pair, "is not an EditPairText", "build pairs with EditPairText"
            )
        source = _check_text(f"pairs[{k}].source", pair.source)
        target = check_target(source, pair.target, f"pairs[{k}].target")
        targets.append(target)
        if pair.guided_prompt is not None:
            _check_text(f"pairs[{k}].guided_prompt", pair.guided_prompt)
        needs_match = pair.guided_prompt is None or target_prompt is None
        spans.append(
            find_phrase(
                original, pair.source, pair.occurrence, f"pairs[{k}].source", f"pairs[{k}].occurrence"
            )
            if needs_match
            else None
        )

    matched = [(k, s) for k, s in enumerate(spans) if s is not None]
    for i, (ka, (a0, a1)) in enumerate(matched):
        for kb, (b0, b1) in matched[i + 1 :]:
            if a0 < b1 and b0 < a1:
                raise OIRInputError(
                    f"pairs[{kb}].source",
                    pairs[kb].source,
                    f"overlaps pair {ka}'s phrase {original[a0:a1]!r} in the prompt "
                    f"(characters {a0}-{a1} and {b0}-{b1})",
                    "give each pair its own non-overlapping phrase (or set occurrence to pick another one)",
                )

    guided: list[str] = []
    for k, pair in enumerate(pairs):
        if pair.guided_prompt is not None:
            guided.append(pair.guided_prompt)
        else:
            span = spans[k]
            assert span is not None
            guided.append(_replace_spans(original, [(span, targets[k])]))

    if target_prompt is None:
        target = _replace_spans(original, [(s, targets[k]) for k, s in matched])
    else:
        target = target_prompt
    return PromptPlan(original=original, target=target, guided=guided, score_texts=targets)
