"""Data mixing, recipes and the evaluation report, on tiny settings."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fresh_tiny

from pixelreason.api import Segmenter
from pixelreason.cli import main
from pixelreason.data.mixing import MixConfig, WorldMixture
from pixelreason.data.world import holder_statement, text_qa_samples
from pixelreason.data.world.categories import CATEGORIES, FACTS, categories_with_fact
from pixelreason.errors import InputError
from pixelreason.eval.evaluate import evaluate, items_from_world, result_grid
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.tokens import SEG_TOKEN
from pixelreason.train.recipe import SPEC_KEYS, load_recipe, preset_config

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


def test_mixture_follows_rates_and_is_deterministic() -> None:
    mixture = WorldMixture(MixConfig(rates={"sem_seg": 3, "text_qa": 1}, image_size=64))
    sources = collections.Counter(mixture.source_of(i) for i in range(400))
    assert set(sources) == {"sem_seg", "text_qa"}
    assert 0.65 < sources["sem_seg"] / 400 < 0.85
    for index in range(20):
        first, again = mixture(index), mixture(index)
        assert first.turns == again.turns
        assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
        segs = sum(t.assistant.count(SEG_TOKEN) for t in first.turns)
        assert segs == len(first.masks)


def test_every_source_collates_into_a_tiny_batch() -> None:
    model = fresh_tiny()
    for source in ("sem_seg", "refer", "text_qa", "reason", "vqa"):
        mixture = WorldMixture(MixConfig(rates={source: 1}, image_size=64))
        batch = model.collate([mixture(i) for i in range(4)])
        assert batch.input_ids.shape[0] == 4


def test_multiturn_samples_can_be_asked_as_the_benchmark_asks_them() -> None:
    plain = WorldMixture(MixConfig(rates={"reason": 1}, image_size=64))
    joined = WorldMixture(MixConfig(rates={"reason": 1}, image_size=64, multiturn_joined=1.0))
    found = 0
    for index in range(60):
        a, b = plain(index), joined(index)
        if len(a.turns) == 1:  # other kinds: the very same sample
            assert a.turns == b.turns and len(a.masks) == len(b.masks)
            continue
        found += 1
        first, last = a.turns[0], a.turns[-1]
        assert len(b.turns) == 1 and b.turns[0].assistant == last.assistant
        # Both questions in one, the follow-up last; only the last answer's masks remain.
        asked = b.turns[0].user
        assert asked.endswith(last.user) and first.user.rstrip("?.").lower() in asked.lower()
        assert len(b.masks) == last.assistant.count(SEG_TOKEN) < len(a.masks)
        assert np.array_equal(b.masks[-1], a.masks[-1])
    assert found >= 3
    with pytest.raises(ValueError, match="multiturn_joined"):
        MixConfig(multiturn_joined=1.5)


def test_reasoning_answers_can_state_their_fact_first() -> None:
    plain = WorldMixture(MixConfig(rates={"reason": 1}, image_size=64))
    reasoned = WorldMixture(MixConfig(rates={"reason": 1}, image_size=64, reason_first=1.0))
    stated = 0
    for index in range(40):
        a, b = plain(index), reasoned(index)
        assert len(a.masks) == len(b.masks) and a.turns[-1].user == b.turns[-1].user
        if a.turns == b.turns:
            continue
        stated += 1
        # the fact as the text QA stream states it ("Xs and Ys are ...."), then the answer
        statement, _, rest = b.turns[0].assistant.partition(". ")
        assert rest == a.turns[0].assistant and len(a.turns) == 1
        asked = {qa.answer for qa in text_qa_samples(0)}
        assert f"{statement}." in asked
    assert stated >= 10
    with pytest.raises(ValueError, match="reason_first"):
        MixConfig(reason_first=-0.1)


def test_reasoning_answers_can_be_the_statement_of_their_fact() -> None:
    """`statement_answers`: one-fact, one-target reasoning samples answered as singular text
    QA states the fact of the target's category, with no mask (knowledge adapter data)."""
    plain = WorldMixture(MixConfig(rates={"reason": 1}, image_size=64))
    config = MixConfig(rates={"reason": 1}, image_size=64, statement_answers=1.0)
    stating = WorldMixture(config)
    asked = {qa.answer for qa in text_qa_samples(0, singular=True)}
    stated = 0
    for index in range(40):
        a, b = plain(index), stating(index)
        assert a.turns[-1].user == b.turns[-1].user
        if a.turns == b.turns:
            assert len(a.masks) == len(b.masks)
            continue
        stated += 1
        assert b.masks == [] and SEG_TOKEN not in b.turns[0].assistant
        assert b.turns[0].assistant in asked
        # the statement's subject is the category the plain answer grounds
        said, grounded = b.turns[0].assistant.lower(), a.turns[0].assistant.lower()
        assert any(c.name in said and c.name in grounded for c in CATEGORIES)
    assert stated >= 10
    with pytest.raises(ValueError, match="statement_answers"):
        MixConfig(statement_answers=2.0)


def test_holder_statement_states_the_fact_of_the_named_holder() -> None:
    fact = next(f for f in FACTS if len(categories_with_fact(f)) > 1)
    holders = categories_with_fact(fact)
    for holder in holders:
        statement = holder_statement(fact, f"the red {holder.name}")
        assert statement is not None and holder.name in statement.lower()
    assert holder_statement(fact, "the spotted giraffe") is None


def test_semantic_questions_can_ask_for_each_instance() -> None:
    config = {"rates": {"sem_seg": 1}, "image_size": 64}
    plain = WorldMixture(MixConfig(**config))
    each = WorldMixture(MixConfig(**config, semantic_instances=1.0))
    split = 0
    for index in range(60):
        a, b = plain(index), each(index)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        if len(b.masks) < 2:  # one instance, or absent: the very same sample
            assert a.turns == b.turns and len(a.masks) == len(b.masks)
            continue
        split += 1
        assert len(a.masks) == 1 and b.turns[0].assistant.count(SEG_TOKEN) == len(b.masks)
        # one mask per instance, disjoint, whose union is the semantic answer's one mask
        stacked = np.stack(b.masks).astype(bool)
        assert stacked.sum(axis=0).max() == 1
        assert np.array_equal(stacked.any(axis=0), a.masks[0].astype(bool))
        # listed left to right, as several-target reasoning answers list them
        columns = [np.nonzero(m)[1].mean() for m in b.masks]
        assert columns == sorted(columns)
    assert split >= 5
    with pytest.raises(ValueError, match="semantic_instances"):
        MixConfig(semantic_instances=2.0)


def test_unknown_sources_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown data sources"):
        MixConfig(rates={"memes": 1})


def test_recipe_validation(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: {preset: tiny}\ntrain: {steps: 3, lora: {r: 4}}\n")
    recipe = load_recipe(path)
    assert recipe.train.steps == 3 and recipe.train.lora.r == 4
    path.write_text("train: {stepz: 3}\n")
    with pytest.raises(InputError, match="unknown keys"):
        load_recipe(path)
    path.write_text("model: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe(path)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_parse_and_name_known_fields(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.train.steps > 0 and sum(recipe.data.rates.values()) > 0
    if "preset" not in recipe.model:
        return
    config = preset_config(recipe.model)
    for key in set(recipe.model) - set(SPEC_KEYS):
        assert getattr(config, key) == recipe.model[key]


def test_unknown_preset_override_is_refused() -> None:
    with pytest.raises(InputError, match="unknown preset overrides"):
        preset_config({"preset": "tiny", "vision_norm": True})


def test_eval_report_schema_and_grid(tmp_path: Path) -> None:
    # seed 1: an absent target and a multi-target query among the six
    items = items_from_world(seed=1, split="val", count=6, image_size=64)
    # The query kind "long" must not be confused with the long-query group.
    items[0] = dataclasses.replace(items[0], kind="long", is_sentence=False)
    segmenter = Segmenter(fresh_tiny(), "tiny")
    report, records = evaluate(segmenter, items, progress=False)
    assert report["count"] == 6 and len(report["samples"]) == 6
    assert set(report["overall"]) >= {"giou", "ciou", "count"}
    assert 0.0 <= report["overall"]["giou"] <= 1.0
    kinds = {item.kind for item in items}
    assert kinds == set(report["by_kind"])
    assert sum(v["count"] for v in report["by_kind"].values()) == 6
    assert report["short"]["count"] == sum(not item.is_sentence for item in items)
    for key in ("no_target_accuracy", "multi_target", "names_targets", "short", "long"):
        assert key in report
    assert set(report["score_calibration"]) == {"pearson", "mean_abs_error", "count"}
    for sample, item in zip(report["samples"], items, strict=True):
        assert len(sample["scores"]) == sample["num_pred"]
        assert sample["names_targets"] is None or isinstance(sample["names_targets"], bool)
        assert (sample["names_targets"] is None) == (not item.targets or not item.target_names)
        assert (sample["multi_target_iou"] is None) == (len(item.targets) < 2)
    scored = [s["multi_target_iou"] for s in report["samples"] if s["multi_target_iou"] is not None]
    assert len(scored) == report["multi_target"]["count"] == 1
    assert abs(sum(scored) / len(scored) - report["multi_target"]["hungarian_iou"]) < 1e-4
    json.dumps(report)  # serialisable
    result_grid(records, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_cli_world_train_eval_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "world"
    assert (
        main(["world", str(data), "--train", "0", "--val", "3", "--test", "0", "--zeroshot", "0"])
        == 0
    )
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "model: {preset: tiny}\ndata: {image_size: 64}\n"
        "train: {steps: 2, batch_size: 2, save_every: 1, log_every: 1}\n"
    )
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 0
    model_dir = tmp_path / "run" / "model"
    assert (
        main(["eval", str(model_dir), str(data), "--split", "val", "--out", str(tmp_path / "eval")])
        == 0
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["count"] == 3 and report["split"] == "val"
    assert (tmp_path / "eval" / "grid.png").is_file()


def test_cli_trains_recipes_as_stages(tmp_path: Path, capsys) -> None:
    first, second = tmp_path / "one.yaml", tmp_path / "two.yaml"
    body = "data: {image_size: 64}\ntrain: {steps: 2, batch_size: 2, log_every: 1}\n"
    first.write_text(f"model: {{preset: tiny}}\n{body}out: {tmp_path / 'one'}\n")
    second.write_text(
        f"model: {{preset: tiny, init: {tmp_path / 'one' / 'model'}}}\n{body}"
        f"out: {tmp_path / 'two'}\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {preset: tiny}\ntrain: {stepz: 2}\n")
    # Every stage is parsed first: a mistake in the last one stops the run before training.
    assert main(["train", str(first), str(broken)]) == 2
    assert "stepz" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()
    assert main(["train", str(first), str(second), "--steps", "3"]) == 2
    assert main(["train", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "stage 2/2" in out and "warm start from" in out
    one = PixelReasonModel.from_pretrained(tmp_path / "one" / "model")
    two = PixelReasonModel.from_pretrained(tmp_path / "two" / "model")
    changed = [k for k, v in one.state_dict().items() if not torch.equal(v, two.state_dict()[k])]
    assert changed  # stage 2 trained on from stage 1's weights
    # A rerun finds both stages finished and trains nothing more.
    assert main(["train", str(first), str(second)]) == 0
    again = PixelReasonModel.from_pretrained(tmp_path / "two" / "model")
    for name, value in two.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name


def test_score_calibration_is_pearson_and_mean_abs_error() -> None:
    from pixelreason.eval.evaluate import _calibration

    result = _calibration([(0.2, 0.1), (0.8, 0.9), (0.5, 0.5)])
    assert result["count"] == 3
    assert result["mean_abs_error"] == pytest.approx(0.2 / 3)
    assert result["pearson"] == pytest.approx(np.corrcoef([0.2, 0.8, 0.5], [0.1, 0.9, 0.5])[0, 1])
    assert _calibration([(0.5, 0.1), (0.5, 0.9)])["pearson"] is None  # constant scores
    assert _calibration([(0.5, 0.1)]) == {"pearson": None, "mean_abs_error": None, "count": 1}
