import json

import pytest

from unsee.errors import UnseeError
from unsee.feedback import Binary, Feedback, Rank, binary_targets, load_feedback, rank_pairs, save_feedback

IDS = ["a", "b", "c", "d"]


def _write(tmp_path, lines, header=True):
    p = tmp_path / "fb.jsonl"
    rows = [json.dumps({"kind": "meta", "version": 1, "labels": ["skull", "kelvo"]})] if header else []
    p.write_text("\n".join(rows + [json.dumps(x) if not isinstance(x, str) else x for x in lines]) + "\n")
    return p


def test_round_trip(tmp_path):
    fb = Feedback(
        ("skull", "kelvo"), [Binary("a", "ann", frozenset({"skull"}), "t"), Rank(("b", "c", "a"), "kelvo", "ann2", "t")]
    )
    save_feedback(tmp_path / "fb.jsonl", fb)
    again = load_feedback(tmp_path / "fb.jsonl", image_ids=IDS)
    assert again.labels == fb.labels and again.judgements == fb.judgements


@pytest.mark.parametrize(
    "line, message",
    [
        ({"kind": "binary", "image": "zz", "annotator": "x", "labels": []}, "2: unknown image id 'zz'"),
        ({"kind": "binary", "image": "a", "annotator": "x", "labels": ["gore"]}, "2: unknown label"),
        ({"kind": "binary", "image": "a", "annotator": "x", "labels": "skull"}, "'labels' must be a list"),
        ({"kind": "binary", "image": "a", "labels": []}, "'annotator' must be"),
        ({"kind": "rank", "images": [], "concept": "kelvo", "annotator": "x"}, "at least 2 images"),
        ({"kind": "rank", "images": ["a", "b", "a"], "concept": "kelvo", "annotator": "x"}, "ranked twice"),
        ({"kind": "rank", "images": ["a", "q"], "concept": "kelvo", "annotator": "x"}, "unknown image id"),
        ({"kind": "rank", "images": ["a", "b"], "concept": "nope", "annotator": "x"}, "unknown concept"),
        ({"kind": "vote", "annotator": "x"}, "'kind' must be"),
        ("{not json", "2: not valid JSON"),
    ],
)
def test_bad_lines_are_refused_with_their_line_number(tmp_path, line, message):
    with pytest.raises(UnseeError, match=message):
        load_feedback(_write(tmp_path, [line]), image_ids=IDS)


def test_header_must_come_first_and_empty_files_are_refused(tmp_path):
    p = _write(
        tmp_path, [{"kind": "binary", "image": "a", "annotator": "x", "labels": []}, {"kind": "meta", "labels": []}]
    )
    with pytest.raises(UnseeError, match="3: the 'meta' header must be the first line"):
        load_feedback(p)
    with pytest.raises(UnseeError, match="has no judgements"):
        load_feedback(_write(tmp_path, []))


def test_targets_average_annotators_and_ranks_expand_to_all_pairs(tmp_path):
    fb = Feedback(
        ("skull",),
        [
            Binary("a", "1", frozenset({"skull"}), ""),
            Binary("a", "2", frozenset(), ""),
            Binary("b", "1", frozenset({"skull"}), ""),
        ],
    )
    assert binary_targets(fb, "skull") == {"a": 0.5, "b": 1.0}
    pairs = rank_pairs([Rank(("a", "b", "c"), "kelvo", "x", "")])
    assert pairs == [("a", "b", "kelvo"), ("a", "c", "kelvo"), ("b", "c", "kelvo")]
