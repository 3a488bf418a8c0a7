import dataclasses
import re
from pathlib import Path

import pytest
import tomllib

from credaudit.config import SECTIONS, ScanConfig, load_toml, merge, render_default_toml
from credaudit.errors import ConfigError

DEFAULT_TOML = Path(__file__).resolve().parents[1] / "configs" / "default.toml"


def test_default_toml_equals_the_config_object():
    text = DEFAULT_TOML.read_text()
    parsed = tomllib.loads(text)
    expected = ScanConfig().to_dict()
    for key, value in expected.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                if sub_value is None:
                    assert sub not in parsed[key], f"{key}.{sub} defaults to none and must be commented out"
                    assert re.search(rf"^# {sub} = \.\.\.  \(default: none\)$", text, re.M), f"{key}.{sub} undocumented"
                else:
                    assert parsed[key][sub] == sub_value, f"{key}.{sub}"
        else:
            assert parsed[key] == value
    assert merge(parsed) == ScanConfig()


def test_default_toml_is_the_rendered_one():
    assert DEFAULT_TOML.read_text() == render_default_toml(), "regenerate configs/default.toml"


def test_every_field_has_help():
    for cls in SECTIONS.values():
        for spec in dataclasses.fields(cls):
            assert spec.metadata.get("help"), f"{cls.__name__}.{spec.name}"


def test_flags_win_over_the_file():
    config = merge(
        {"detect": {"k": 5, "method": "vote"}, "seed": 3},
        file_name="ci.toml",
        overrides={"detect.k": (7, "--k"), "detect.method": (None, "--method")},
    )
    assert config.detect.k == 7, "an explicit flag wins"
    assert config.detect.method == "vote", "an unset flag leaves the file's value"
    assert config.seed == 3


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"unknown key detect\.kk in ci\.toml; valid keys in \[detect\] are: k, method"
    ):
        merge({"detect": {"kk": 5}}, file_name="ci.toml")
    with pytest.raises(
        ConfigError, match=r"unknown key detection in ci\.toml; valid top-level keys are: seed, \[input\]"
    ):
        merge({"detection": {}}, file_name="ci.toml")
    with pytest.raises(ConfigError, match=r"unknown keys detect\.kk, output\.tops in ci\.toml"):
        merge({"detect": {"kk": 5}, "output": {"tops": 3}}, file_name="ci.toml")


@pytest.mark.parametrize(
    "values,message",
    [
        (
            {"gates": {"max_noise_rate": 1.5}},
            r"gates\.max_noise_rate in ci\.toml must be a number in \[0, 1\]; got 1\.5",
        ),
        ({"detect": {"k": 0}}, r"detect\.k in ci\.toml must be an int >= 1; got 0"),
        ({"detect": {"k": "ten"}}, r"detect\.k in ci\.toml must be an int >= 1; got 'ten'"),
        ({"detect": {"method": "knn"}}, r"must be one of rank, vote, threshold; got 'knn'"),
        ({"encoder": {"device": "gpu"}}, r"encoder\.device in ci\.toml must be auto, cpu, cuda or cuda:N; got 'gpu'"),
        ({"input": {"drop_unlabelled": "yes"}}, r"must be true or false"),
        ({"input": {"text_cols": []}}, r"must be a non-empty list of column names"),
        ({"gates": {"max_flagged": 2.5}}, r"must be a row count \(int\) or a fraction below 1 \(float\)"),
        ({"detect": "k"}, r"\[detect\] in ci\.toml must be a table"),
    ],
)
def test_bad_values_name_their_source(values, message):
    with pytest.raises(ConfigError, match=message):
        merge(values, file_name="ci.toml")


def test_bad_flag_value_names_the_flag():
    with pytest.raises(ConfigError, match=r"--max-noise-rate must be a number in \[0, 1\]; got -0\.1"):
        merge(None, overrides={"gates.max_noise_rate": (-0.1, "--max-noise-rate")})


def test_coercions():
    config = merge(
        {"input": {"text_cols": "title"}, "gates": {"max_flagged": 0.05, "min_credibility": 1}, "detect": {"k": 12.0}}
    )
    assert config.input.text_cols == ("title",)
    assert config.gates.max_flagged == 0.05
    assert config.gates.min_credibility == 1.0 and isinstance(config.gates.min_credibility, float)
    assert config.detect.k == 12 and isinstance(config.detect.k, int)
    assert merge({"gates": {"max_flagged": 100}}).gates.max_flagged == 100


def test_load_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[detect\nk = 1")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_toml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    bad.write_bytes(b"\xff\xfe[detect]\n")  # UTF-16 or binary
    with pytest.raises(ConfigError, match="bad.toml is not UTF-8 text"):
        load_toml(bad)


@pytest.mark.parametrize("key", ["gates.max_noise_rate", "gates.max_flagged", "select.diversity"])
def test_a_nan_or_infinite_setting_is_refused(key):
    # NaN compares false with every bound: a NaN gate would pass whatever the data.
    section, name = key.split(".")
    for value in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=f"{name} .*must be a finite number"):
            merge({section: {name: value}})


def test_config_is_frozen_and_serialisable():
    config = ScanConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    assert config.to_dict()["input"]["text_cols"] == ["text"]


def test_a_retired_key_is_ignored_with_a_note(capsys):
    config = merge({"noise": {"min_knn_agreement": 0.5, "n_bootstrap": 7}}, file_name="old.toml")
    assert config.noise.n_bootstrap == 7
    err = capsys.readouterr().err
    assert "noise.min_knn_agreement in old.toml is ignored" in err and "min_kappa" in err
