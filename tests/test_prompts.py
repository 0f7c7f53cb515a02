import pytest

from unsee.errors import UnseeError
from unsee.prompts import read_prompts


def test_text_file_skips_blank_and_comment_lines(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("  first prompt \n\n# not a prompt\nsecond\n")
    prompts = read_prompts(p)
    assert [x.text for x in prompts] == ["first prompt", "second"]
    assert [x.index for x in prompts] == [0, 1]
    assert all(x.seed is None and x.guidance is None for x in prompts)


def test_i2p_csv_columns_are_honoured(tmp_path):
    p = tmp_path / "i2p.csv"
    p.write_text(
        "prompt,categories,sd_seed,sd_guidance,sd_image_width,sd_image_height,case_number\n"
        '"a, quoted prompt",sexual,42,7.0,64,32,12\n'
        "plain,,,,,,\n"
    )
    a, b = read_prompts(p)
    assert (a.text, a.categories, a.seed, a.guidance, a.width, a.height, a.case_number) == (
        "a, quoted prompt",
        "sexual",
        42,
        7.0,
        64,
        32,
        "12",
    )
    assert (b.seed, b.guidance, b.width, b.categories) == (None, None, None, None)


def test_evaluation_columns_are_a_fallback(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("prompt,evaluation_seed,evaluation_guidance\nx,7,3.5\n")
    (x,) = read_prompts(p)
    assert (x.seed, x.guidance) == (7, 3.5)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", "", "has no prompts"),
        ("comments.txt", "# only\n\n", "has no prompts"),
        ("nocol.csv", "text,seed\nhello,1\n", "need a 'prompt' column"),
        ("badseed.csv", "prompt,sd_seed\nhello,abc\n", "must be a number"),
        ("fracseed.csv", "prompt,sd_seed\nhello,1.5\n", "whole number"),
        ("negseed.csv", "prompt,sd_seed\nhello,-3\n", "seed must be >= 0"),
        ("badsize.csv", "prompt,sd_image_width\nhello,65\n", "multiple of 8"),
        ("emptycsv.csv", "prompt\n\n", "has no prompts"),
    ],
)
def test_bad_prompt_files_are_refused_with_location(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(UnseeError, match=message) as e:
        read_prompts(p)
    assert "\n" not in str(e.value)


def test_bad_csv_value_names_the_line(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("prompt,sd_seed\nok,1\nbad,zz\n")
    with pytest.raises(UnseeError, match=r"x.csv:3: column 'sd_seed'"):
        read_prompts(p)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(UnseeError, match="does not exist"):
        read_prompts(tmp_path / "nope.txt")
    with pytest.raises(UnseeError, match="is a folder"):
        read_prompts(tmp_path)
