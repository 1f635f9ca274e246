"""Contracts of mygpt.prompts: one picker for every report that generates from held-out text."""

from __future__ import annotations

import pytest

from mygpt.prompts import pick_prompts, read_prompt_file
from mygpt.tokenization import train_char_tokenizer

PLAY = "".join(f"SPEAKER {i}:\nThis is line {i} of the play, and it goes on for a while.\n\n" for i in range(40))
OTHER = "".join(f"VOICE {i}:\nAnother text entirely, line {i}, with words to cut at.\n\n" for i in range(30))


def test_character_prompts_start_at_a_line_end_before_a_space_and_are_followed_by_their_reference():
    prompts = pick_prompts([PLAY, OTHER], 6, length=60, reference_length=50, seed=1)
    assert len(prompts) == 6
    texts = [PLAY, OTHER]
    for p in prompts:
        source = texts[p.document]
        assert source[p.start - 1] == "\n" and source[p.start : p.start + len(p.text)] == p.text
        assert p.text + p.reference in source
        assert 0 < len(p.text) <= 60 and len(p.reference) == 50
        assert p.reference[0].isspace()  # the prompt ends before a space or newline: no word cut in half
    assert [(p.document, p.start) for p in prompts] == sorted((p.document, p.start) for p in prompts)


def test_line_prompts_end_with_whole_lines():
    prompts = pick_prompts([PLAY], 5, length=80, seed=0, end="line")
    assert len(prompts) == 5
    for p in prompts:
        assert p.text.endswith("\n") and p.text in PLAY and len(p.text) <= 80 and p.reference is None


def test_token_prompts_have_exactly_the_asked_lengths():
    tokenizer = train_char_tokenizer([PLAY])
    prompts = pick_prompts([PLAY], 5, length=16, reference_length=16, tokenizer=tokenizer, seed=3, strict=True)
    for p in prompts:
        assert len(p.ids) == 16 and len(p.reference_ids) == 16
        assert tokenizer(p.text, add_special_tokens=False)["input_ids"] == p.ids
        assert ("\n" + p.text + p.reference) in PLAY


def test_prompts_never_overlap_or_repeat_and_the_seed_decides():
    prompts = pick_prompts([PLAY], 10, length=40, reference_length=40, seed=7)
    spans = sorted((p.start, p.start + len(p.text) + len(p.reference)) for p in prompts)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert len({p.text for p in prompts}) == len(prompts)
    assert pick_prompts([PLAY], 10, length=40, reference_length=40, seed=7) == prompts
    assert pick_prompts([PLAY], 10, length=40, reference_length=40, seed=8) != prompts


def test_too_few_prompts_is_an_error_only_when_strict():
    assert len(pick_prompts([PLAY[:300]], 50, length=30)) < 50
    with pytest.raises(ValueError, match="gives only .* prompts"):
        pick_prompts([PLAY[:300]], 50, length=30, strict=True)
    with pytest.raises(ValueError, match="end must be"):
        pick_prompts([PLAY], 2, length=30, end="sentence")


def test_a_prompt_file_gives_one_prompt_per_non_empty_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("ROMEO:\n\n  JULIET: hi \n")
    assert read_prompt_file(path) == ["ROMEO:", "  JULIET: hi "]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="holds no prompt"):
        read_prompt_file(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="does not exist"):
        read_prompt_file(tmp_path / "none.txt")
