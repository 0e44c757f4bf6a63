"""``uaafusion.config.load_params``: every wrong key, type or value is a ConfigError naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from uaafusion.config import DataConfig, Params, load_params, params_from_dict, parse_overrides
from uaafusion.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_params(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_repository_params_yaml_loads():
    params = load_params(REPO_ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.layout in ("msrs", "fmb", "boxes", "pairs")
    assert len(params.data.class_names) == params.data.num_classes
    assert params.synthetic.train >= 1 and params.synthetic.test >= 1


def test_defaults_equal_an_empty_file_and_params_yaml(tmp_path):
    assert load_params(write_params(tmp_path, {})) == Params()
    assert load_params(REPO_ROOT / "params.yaml") == Params()  # params.yaml states every default


def test_params_yaml_lists_every_accepted_key_with_a_comment():
    from uaafusion.params_doc import commented_keys, schema_keys

    listed = commented_keys((REPO_ROOT / "params.yaml").read_text())
    accepted = [key for key, _, _ in schema_keys()]
    assert [key for key in accepted if key not in listed] == [], "accepted by uaafusion.config, not in params.yaml"
    assert [key for key in accepted if not listed[key]] == [], "listed without a one-line comment"
    sections = {key.rsplit(".", 1)[0] for key in accepted if "." in key}
    sections |= {section.rsplit(".", 1)[0] for section in sections if "." in section}
    assert sorted(set(listed) - set(accepted) - sections) == []  # nothing listed that the config refuses


def test_the_generated_parameter_page_is_up_to_date():
    from uaafusion.params_doc import params_markdown

    expected = params_markdown((REPO_ROOT / "params.yaml").read_text())
    assert (REPO_ROOT / "docs" / "params.md").read_text() == expected, \
        "docs/params.md is stale: run python -m uaafusion.params_doc docs/params.md"


def test_round_trip_through_to_dict():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params_from_dict(params.to_dict()) == params
    assert params.flat()["data.layout"] == params.data.layout


def test_unknown_key_names_dotted_key_and_allowed_keys(tmp_path):
    path = write_params(tmp_path, {"train": {"rounds": 1, "epochz": 3}})
    with pytest.raises(ConfigError) as error:
        load_params(path)
    message = str(error.value)
    assert "train.epochz" in message
    assert "allowed keys in train" in message and "rounds" in message and "schedule" in message
    assert str(path) in message


def test_unknown_nested_and_top_level_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.fusion\.depth.*allowed keys in model\.fusion: features, inference_mask, inference_mode, name, stages"):
        load_params(write_params(tmp_path, {"model": {"fusion": {"depth": 2}}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) trian; allowed keys: attribution"):
        load_params(write_params(tmp_path, {"trian": {}}))


@pytest.mark.parametrize("raw, message", [
    ({"train": {"rounds": "two"}}, "train.rounds must be an integer, got 'two'"),
    ({"train": {"rounds": True}}, "train.rounds must be an integer"),
    ({"train": {"amp": "yes"}}, "train.amp must be true or false"),
    ({"train": {"lr_fusion": "fast"}}, "train.lr_fusion must be a number"),
    ({"data": {"root": 5}}, "data.root must be a string"),
    ({"data": {"class_names": "road"}}, "data.class_names must be a list"),
    ({"data": "msrs"}, "'data' must be a mapping"),
    ({"evaluate": {"peers": ["a"]}}, "evaluate.peers must be a mapping"),
])
def test_wrong_types_name_the_key(tmp_path, raw, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_params(write_params(tmp_path, raw))


@pytest.mark.parametrize("raw, key, allowed", [
    ({"train": {"schedule": "sometimes"}}, "train.schedule", "alternating, joint"),
    ({"data": {"layout": "coco"}}, "data.layout", "msrs, fmb, boxes, pairs"),
    ({"data": {"on_bad_input": "ignore"}}, "data.on_bad_input", "strict, skip"),
    ({"train": {"lr_schedule": "step"}}, "train.lr_schedule", "cosine, constant"),
    ({"model": {"fusion": {"inference_mask": "visible"}}}, "model.fusion.inference_mask", "average, infrared"),
    ({"attribution": {"engine": "fast"}}, "attribution.engine", "reverse, forward, captum"),
])
def test_value_outside_allowed_set_lists_allowed_values(tmp_path, raw, key, allowed):
    with pytest.raises(ConfigError) as error:
        load_params(write_params(tmp_path, raw))
    message = str(error.value)
    assert key in message and f"allowed values: {allowed}" in message


@pytest.mark.parametrize("raw, key", [
    ({"data": {"crop_size": -1}}, "data.crop_size"),
    ({"data": {"num_classes": 3}}, "data.class_names"),
    ({"data": {"ignore_index": 2}}, "data.ignore_index"),
    ({"data": {"batch_size": 0}}, "data.batch_size"),
    ({"synthetic": {"height": 8}}, "synthetic.height"),
    ({"synthetic": {"train": 0}}, "synthetic.train"),
    ({"train": {"lr_fusion": 0}}, "train.lr_fusion"),
    ({"loss": {"roi": -0.5}}, "loss.roi"),
    ({"loss": {"class_balance": 1.5}}, "loss.class_balance"),
    ({"loss": {"class_balance": -0.5}}, "loss.class_balance"),
    ({"data": {"object_crops": 1.2}}, "data.object_crops"),
    ({"data": {"layout": "msrs", "object_crops": 0.5}}, "data.object_crops"),
    ({"device": "gpu"}, "device"),
    ({"outputs": {"reports": " "}}, "outputs.reports"),
])
def test_value_checks_name_the_key(tmp_path, raw, key):
    with pytest.raises(ConfigError, match=rf"{key.replace('.', '[.]')} = .* is not allowed; expected"):
        load_params(write_params(tmp_path, raw))


def test_overrides_apply_and_are_validated(tmp_path):
    path = write_params(tmp_path, {"train": {"rounds": 2}})
    params = load_params(path, {"train.rounds": 1, "data.layout": "pairs", "data.root": "elsewhere"})
    assert params.train.rounds == 1 and params.data.layout == "pairs" and params.data.root == "elsewhere"
    assert load_params(path).train.rounds == 2  # overrides do not leak into the file or later loads
    with pytest.raises(ConfigError, match="data.layout = 'coco' is not allowed"):
        load_params(path, {"data.layout": "coco"})
    with pytest.raises(ConfigError, match="train.nonsense"):
        load_params(path, {"train.nonsense": 1})
    with pytest.raises(ConfigError, match="seed"):
        load_params(path, {"seed.value": 1})
    with pytest.raises(ConfigError, match="'train' is not a section"):
        load_params(write_params(tmp_path, {"train": 3}), {"train.rounds": 1})


def test_class_names_become_a_tuple(tmp_path):
    params = load_params(write_params(tmp_path, {"data": {"num_classes": 2, "class_names": ["a", "b"]}}))
    assert params.data == DataConfig(num_classes=2, class_names=("a", "b"))


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_params(listing)


@pytest.mark.parametrize("preset", sorted((REPO_ROOT / "params").rglob("*.yaml")), ids=lambda path: path.name)
def test_presets_are_short_overrides_that_write_to_their_own_folders(preset):
    params = load_params(preset)
    defaults = Params().outputs
    for name in ("models", "fused", "reports"):
        assert getattr(params.outputs, name) != getattr(defaults, name), f"{preset.name}: outputs.{name}"
    assert "extends" in yaml.safe_load(preset.read_text()) and len(preset.read_text().splitlines()) <= 40


@pytest.mark.parametrize("preset", sorted((REPO_ROOT / "params" / "methods").glob("*.yaml")), ids=lambda path: path.stem)
def test_method_presets_train_their_head_on_the_msrs_preset_budget(preset):
    from uaafusion.training import training_params

    method, msrs = load_params(preset), load_params(REPO_ROOT / "params" / "msrs-boxes.yaml")
    assert method.model.fusion.name == preset.stem
    relevant, base = training_params(method), training_params(msrs)
    relevant["model"]["fusion"].pop("name"), base["model"]["fusion"].pop("name")
    assert relevant == base  # the same data, crops, schedule and steps: only the head differs


def test_a_preset_overrides_what_it_names_and_keeps_the_rest_of_its_base(tmp_path):
    base = write_params(tmp_path, {"train": {"rounds": 3, "lr_fusion": 0.01}, "evaluate": {"peers": {"a": "x"}}})
    (tmp_path / "presets").mkdir()
    preset = tmp_path / "presets" / "short.yaml"
    preset.write_text("extends: ../params.yaml\ntrain: {rounds: 1}\nevaluate: {peers: {b: y}}\n")
    params = load_params(preset)
    assert (params.train.rounds, params.train.lr_fusion) == (1, 0.01)
    assert params.evaluate.peers == {"a": "x", "b": "y"}  # mappings merge key by key
    chained = tmp_path / "presets" / "chained.yaml"
    chained.write_text("extends: short.yaml\nseed: 7\n")
    assert load_params(chained) == load_params(preset, {"seed": 7})
    assert load_params(base).train.rounds == 3


def test_a_wrong_key_or_base_in_a_preset_is_named(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    preset = tmp_path / "preset.yaml"
    preset.write_text("extends: params.yaml\ntrain: {roundz: 1}\n")
    with pytest.raises(ConfigError, match=r"preset\.yaml \(extending .*params\.yaml\): unknown key\(s\) train\.roundz"):
        load_params(preset)
    preset.write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml: params file not found \(named by extends in .*preset\.yaml\)"):
        load_params(preset)
    preset.write_text("extends: preset.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_params(preset)
    preset.write_text("extends: [params.yaml]\n")
    with pytest.raises(ConfigError, match="expected the path of a params file"):
        load_params(preset)


def test_parse_overrides_reads_yaml_values_and_names_a_bad_item():
    assert parse_overrides(["train.rounds=1", "data.class_names=[a, b]", "report.discussion=null", "x.y=a=b"]) == {
        "train.rounds": 1, "data.class_names": ["a", "b"], "report.discussion": None, "x.y": "a=b"}
    for bad in ("train.rounds", "=1"):
        with pytest.raises(ConfigError, match=re.escape(repr(bad))):
            parse_overrides([bad])
