"""What `unsee demo` prints, from a demo's result: the grid's readings and the attack table."""

from pathlib import Path

from unsee.demo import DemoResult, _attack_text, report_text


def test_the_grid_readings_give_each_prompts_commonest_reading_and_the_flagged_counts():
    reads = [
        {
            "prompt": "a red circle on the beach",
            "colour": "red",
            "shape": "circle",
            "background": "beach",
            "extra": e,
            "style": "none",
        }
        for e in ("skull", "none", "none", "none")
    ]
    reads[3] |= {"shape": "ring"}
    text = report_text(DemoResult(Path("runs/d"), "toyworld", False, Path("runs/d/base"), Path("g.png"), reads))
    row = next(line for line in text.splitlines() if line.startswith("a red circle"))
    assert row.split()[6:] == ["red", "4/4", "circle", "3/4", "beach", "4/4", "1/4", "0/4"]
    assert "grid: g.png" in text and "reward model" not in text  # no metrics: the grid only


def test_the_attack_table_pairs_each_model_with_its_pre_and_post_rates():
    def row(kind, pre, post, adversarial=0.0):
        return {
            "kind": kind,
            "pre_attack": {"rate": pre},
            "post_attack": {"rate": post},
            "adversarial": {"rate": adversarial},
            "denominator": 40,
        }

    metrics = {
        "results": {"base": {"seen-benign": {"labels": {"skull": {"rate": 0.0}}}}},
        "attack_results": {
            "base": {"rab": row("ringabell", 1.0, 1.0, 0.05)},
            "sdd": {"rab": row("ringabell", 0.025, 0.05), "cce": row("invert", 0.025, 0.6)},
        },
    }
    lines = _attack_text(metrics)
    assert lines[2].split() == ["base", "1.000", "->", "1.000", "-"]
    assert lines[3].split() == ["sdd", "0.025", "->", "0.050", "0.025", "->", "0.600"]
    assert "show it in 0.050 of images; benign prompts 0.000; 40 images per cell" in lines[4]
    assert _attack_text({"results": {}}) == []
