"""Typed YAML config: defaults, overrides, and errors that name the key and the file."""

from __future__ import annotations

import pytest

from clinmm.config import ClinmmConfig, config_from_dict, config_to_dict, demo_config, load_config
from clinmm.errors import ConfigError


def test_defaults_round_trip() -> None:
    cfg = ClinmmConfig()
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_dict(config_to_dict(demo_config())) == demo_config()


def test_yaml_overrides_and_base(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("fusion:\n  method: gated\n  dim: 64\ntrain:\n  lr_head: 1\n")
    cfg = load_config(path, base=demo_config())
    assert cfg.fusion.method == "gated" and cfg.fusion.dim == 64
    assert cfg.train.lr_head == 1.0 and isinstance(cfg.train.lr_head, float)  # int accepted where float expected
    assert cfg.image.backbone == demo_config().image.backbone  # untouched sections keep the base


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("fusion:\n  methd: concat\n", "fusion: unknown key(s) ['methd']"),
        ("fusion:\n  method: sum\n", "fusion.method: expected one of"),
        ("train:\n  epochs: ten\n", "train.epochs: expected int, got str"),
        ("train:\n  epochs: true\n", "train.epochs: expected int, got bool"),
        ("data:\n  labels: nodule\n", "data.labels: expected a list"),
        ("model:\n  x: 1\n", "unknown section(s) ['model']"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("fusion: [\n", "not valid YAML"),
        ("train:\n  flip_axes: [2]\n", "train.flip_axes: [2] are not spatial axes of a 2D input"),
        ("fusion:\n  image_relevance_carry_subcells: 0\n", "fusion.image_relevance_carry_subcells must be 1 … 4"),
        ("fusion:\n  image_relevance_carry: pixels\n", "fusion.image_relevance_carry: expected one of"),
        ("fusion:\n  image_relevance_carry_permutations: 5\n", "carry_permutations must be an even"),
        ("fusion:\n  image_relevance_carry_subcells: 2\n  image_relevance_carry_window: 1.25\n",
         "whole number of sub-cells"),
    ],
)
def test_errors_name_key_and_file(tmp_path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")
