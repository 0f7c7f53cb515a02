"""What trained a model is recorded with it, through its whole lineage, and evaluation marks prompt sets it saw."""

import json
import shutil

import pytest
import torch

from unsee.erase import EraseConfig, erase
from unsee.provenance import model_prompts, overlap, token_run_dir
from unsee.toyworld import PIPELINE, assets_path

WORLD = assets_path()


def _erase(model, out, **kw):
    base = dict(
        model=str(model),
        out=str(out),
        steps=2,
        reuse=2,
        checkpoint_every=2,
        ddim_steps=3,
        lr=1e-3,
        device="cpu",
        batch_size=2,
    )
    return erase(EraseConfig(**(base | kw)), progress=False)


def test_erase_records_its_prompts_its_base_models_and_its_tokens(tiny_model_dir, tmp_path):
    from unsee.invert import save_embedding

    tok = save_embedding(tmp_path / "t.safetensors", "<flagged>", torch.randn(1, 32))
    token_run_dir(tok).mkdir()
    (token_run_dir(tok) / "unsee.json").write_text(json.dumps({"training_prompts": ["a photo of a scary cat"]}))
    _erase(
        tiny_model_dir,
        tmp_path / "uce",
        method="uce",
        concept=("red",),
        token=str(tok),
        anchor="blue",
        context=("a {} cat at night",),
        preserve=("a green tree",),
    )
    first = model_prompts(tmp_path / "uce")
    # the concept (word and token) and the anchor where each context puts them, the kept prompts, the token's own
    assert first == {
        "a red cat at night",
        "a <flagged> cat at night",
        "a blue cat at night",
        "a green tree",
        "a photo of a scary cat",
    }
    # a second edit on the first's output keeps the first's record; flagged prompts count with and without the concept
    _erase(tmp_path / "uce", tmp_path / "sdd", method="sdd", concept=("dog",), flagged=("a scary animal",))
    assert model_prompts(tmp_path / "sdd") == first | {"dog", "a scary animal", "a scary animal dog"}


def test_overlap_counts_prompts_word_for_word_and_phrasings_by_template():
    trained = {"a red triangle with a skull on the beach", "a  green ring with a skull at night"}
    seen = ["a blue circle with a skull in the city", "a green ring with a skull at night"]
    novel = ["a photo of a skull in the snow", "the skull and a red circle"]
    assert overlap(seen, trained) == {"prompts": 2, "trained_prompts": 1, "trained_phrasings": 2}
    assert overlap(novel, trained) == {"prompts": 2, "trained_prompts": 0, "trained_phrasings": 0}


@pytest.mark.skipif(not (WORLD / PIPELINE / "model_index.json").exists(), reason="no toy world built")
def test_evaluate_marks_the_sets_a_model_trained_on(tmp_path):
    from unsee.evaluate import EvaluateConfig, evaluate

    (tmp_path / "seen").mkdir()
    (tmp_path / "novel").mkdir()
    seen, novel = tmp_path / "seen" / "skull.txt", tmp_path / "novel" / "skull.txt"
    seen.write_text("a red circle with a skull on the beach\na blue square with a skull at night\n")
    novel.write_text("a photo of a skull at night\nthe skull and a red circle\n")
    copy = shutil.copytree(WORLD / PIPELINE, tmp_path / "erased")
    (copy / "unsee.json").write_text(
        json.dumps(
            {"training_prompts": ["a green cross with a skull on the beach", "a blue square with a skull at night"]}
        )
    )
    m = evaluate(
        EvaluateConfig(
            model=("toyworld", str(copy)),
            name=("base", "erased"),
            prompts=(str(seen), str(novel)),
            out=str(tmp_path / "eval"),
            images_per_prompt=1,
            steps=2,
            device="cpu",
            bootstrap=10,
        ),
        progress=False,
    )
    res = m["results"]
    assert list(m["prompt_sets"]) == [
        "seen-skull",
        "novel-skull",
    ]  # one file name in two folders: the folder names them
    assert "training_overlap" not in res["base"]["seen-skull"]  # nothing recorded: nothing claimed
    assert res["erased"]["seen-skull"]["training_overlap"] == {
        "prompts": 2,
        "trained_prompts": 1,
        "trained_phrasings": 2,
    }
    assert res["erased"]["novel-skull"]["training_overlap"] == {
        "prompts": 2,
        "trained_prompts": 0,
        "trained_phrasings": 0,
    }
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "1 prompts, 2 phrasings of 2" in report and "no record" in report


@pytest.mark.skipif(not (WORLD / PIPELINE / "model_index.json").exists(), reason="no toy world built")
def test_demo_evaluates_each_set_in_both_splits_and_its_table_shows_both(tmp_path):
    from unsee.demo import EVAL_SETS, EVAL_SPLITS, evidence_table
    from unsee.evaluate import EvaluateConfig, evaluate
    from unsee.toyworld import prompts_path

    files = tuple(str(prompts_path(s, split)) for split in EVAL_SPLITS for s in EVAL_SETS)
    m = evaluate(
        EvaluateConfig(
            model=("toyworld",),
            name=("base",),
            prompts=files,
            out=str(tmp_path / "eval"),
            images_per_prompt=1,
            steps=2,
            device="cpu",
            bootstrap=10,
        ),
        progress=False,
    )
    assert list(m["prompt_sets"]) == [f"{split}-{s}" for split in EVAL_SPLITS for s in EVAL_SETS]
    row = next(line for line in evidence_table(m).splitlines() if line.startswith("base"))
    res = m["results"]["base"]
    explicit = f"{res['seen-object_explicit']['labels']['skull']['rate']:.2f}/{res['novel-object_explicit']['labels']['skull']['rate']:.2f}"
    mask = f"{res['seen-object_neighbour']['labels']['mask']['rate']:.2f}/{res['novel-object_neighbour']['labels']['mask']['rate']:.2f}"
    assert row.split()[1:4:2] == [explicit, mask]
