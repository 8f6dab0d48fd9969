"""Guided Prompt Builder: target / guided prompts and score texts from edit pairs."""

from __future__ import annotations

import json

import pytest

from oir_core.errors import OIRInputError
from oir_core.prompts import EditPairText, PromptPlan, build_prompts, find_phrase


def test_issue_example() -> None:
    plan = build_prompts(
        "a dog sitting next to a gift", [EditPairText("dog", "cat"), EditPairText("gift", "cake")]
    )
    assert plan.guided == ["a cat sitting next to a gift", "a dog sitting next to a cake"]
    assert plan.target == "a cat sitting next to a cake"
    assert plan.score_texts == ["cat", "cake"]
    assert plan.original == "a dog sitting next to a gift"


def test_official_bowl_example_multiword_phrases() -> None:
    original = "a bowl of dumplings on the left and chopsticks on the right"
    plan = build_prompts(
        original, [EditPairText("dumplings", "fry rice"), EditPairText("chopsticks", "knife")]
    )
    assert plan.guided == [
        "a bowl of fry rice on the left and chopsticks on the right",
        "a bowl of dumplings on the left and knife on the right",
    ]
    assert plan.target == "a bowl of fry rice on the left and knife on the right"


def test_whole_word_case_insensitive_and_rest_preserved() -> None:
    original = "A  Cat near the cathedral,  Cat-like!"
    # "cat" occurs as a word twice ("Cat", "Cat-like": '-' is a boundary), never inside "cathedral".
    assert [original[s:e] for s, e in [find_phrase(original, "cat", 1), find_phrase(original, "CAT", 2)]] == [
        "Cat",
        "Cat",
    ]
    plan = build_prompts(original, [EditPairText("cat", "dog", occurrence=1)])
    assert plan.target == "A  dog near the cathedral,  Cat-like!"  # double spaces and case kept


def test_phrases_with_non_word_edges_and_internal_whitespace() -> None:
    original = "a (red) car and a big   blue ball."
    plan = build_prompts(
        original, [EditPairText("(red)", "(green)"), EditPairText("big blue ball.", "cube.")]
    )
    assert plan.guided == ["a (green) car and a big   blue ball.", "a (red) car and a cube."]
    assert plan.target == "a (green) car and a cube."
    # a non-word edge does not demand a word boundary on that side, a word edge does
    assert find_phrase("x(red)y", "(red)") == (1, 6)
    with pytest.raises(OIRInputError, match="not found"):
        find_phrase("a redcar", "red")


def test_occurrence_selects_and_is_one_based() -> None:
    original = "a dog chasing a dog"
    first = build_prompts(original, [EditPairText("dog", "cat", occurrence=1)])
    second = build_prompts(original, [EditPairText("dog", "cat", occurrence=2)])
    assert first.target == "a cat chasing a dog"
    assert second.target == "a dog chasing a cat"
    both = build_prompts(
        original, [EditPairText("dog", "cat", occurrence=2), EditPairText("Dog", "fox", occurrence=1)]
    )
    assert both.target == "a fox chasing a cat"
    assert both.guided == ["a dog chasing a cat", "a fox chasing a dog"]


def test_explicit_prompts_skip_matching() -> None:
    # Source words absent from the prompt are fine when nothing needs matching.
    plan = build_prompts(
        "a photo",
        [EditPairText("zebra", "horse", guided_prompt="a photo of a horse")],
        target_prompt="a photo of a horse on grass",
    )
    assert plan.guided == ["a photo of a horse"]
    assert plan.target == "a photo of a horse on grass"
    assert plan.score_texts == ["horse"]


def test_mixed_explicit_and_matched_pairs() -> None:
    pairs = [EditPairText("dog", "cat", guided_prompt="my own guided"), EditPairText("gift", "cake")]
    plan = build_prompts("a dog and a gift", pairs)
    assert plan.guided == ["my own guided", "a dog and a cake"]
    # no explicit target prompt: the pair with an explicit guided prompt is still matched for it
    assert plan.target == "a cat and a cake"
    with pytest.raises(OIRInputError, match=r"pairs\[0\]\.source"):
        build_prompts("a puppy and a gift", pairs)
    plan = build_prompts("a puppy and a gift", pairs, target_prompt="a cat and a cake")
    assert plan.target == "a cat and a cake"


def test_to_dict_is_json() -> None:
    plan = build_prompts("a dog", [EditPairText("dog", "cat")])
    data = plan.to_dict()
    assert json.loads(json.dumps(data)) == {
        "original": "a dog",
        "target": "a cat",
        "guided": ["a cat"],
        "score_texts": ["cat"],
    }
    assert isinstance(plan, PromptPlan)


@pytest.mark.parametrize(
    ("original", "pairs", "target", "input_name", "problem"),
    [
        ("a dog", [EditPairText("cow", "cat")], None, "pairs[0].source", "not found"),
        ("a dog and a dog", [EditPairText("dog", "cat")], None, "pairs[0].source", "occurs 2 times"),
        (
            "a dog and a dog",
            [EditPairText("dog", "cat", occurrence=3)],
            None,
            "pairs[0].occurrence",
            "out of range",
        ),
        ("a dog", [EditPairText("dog", "cat", occurrence=0)], None, "pairs[0].occurrence", "out of range"),
        (
            "a dog",
            [EditPairText("dog", "cat", occurrence=1.0)],
            None,
            "pairs[0].occurrence",
            "not an integer",
        ),  # type: ignore[arg-type]
        (
            "a big dog",
            [EditPairText("big dog", "cat"), EditPairText("dog", "fox")],
            None,
            "pairs[1].source",
            "overlaps pair 0",
        ),
        (
            "a dog",
            [EditPairText("dog", "cat"), EditPairText("dog", "fox")],
            None,
            "pairs[1].source",
            "overlaps",
        ),
        ("a dog", [EditPairText("  ", "cat")], None, "pairs[0].source", "empty"),
        ("a dog", [EditPairText("dog", "")], None, "pairs[0].target", "empty"),
        ("a dog", [EditPairText("dog", "cat", guided_prompt=" ")], None, "pairs[0].guided_prompt", "empty"),
        ("a dog", [], None, "pairs", "no edit pairs"),
        ("", [EditPairText("dog", "cat")], None, "original_prompt", "empty"),
        ("a dog", [EditPairText("dog", "cat")], "", "target_prompt", "empty"),
        ("a dog", [("dog", "cat")], None, "pairs[0]", "not an EditPairText"),
    ],
)
def test_errors_name_input_and_fix(
    original: str, pairs: list, target: str | None, input_name: str, problem: str
) -> None:
    with pytest.raises(OIRInputError) as info:
        build_prompts(original, pairs, target_prompt=target)
    assert info.value.input_name == input_name
    assert problem in info.value.problem
    assert info.value.fix


def test_ambiguity_fix_mentions_range() -> None:
    with pytest.raises(OIRInputError) as info:
        build_prompts("dog, dog, dog", [EditPairText("dog", "cat")])
    assert "1 to 3" in info.value.fix
