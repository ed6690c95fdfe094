"""Settings come from the environment; each stage of .chalice/config.json is complete."""

import json
from pathlib import Path

import pytest

from chalicelib.settings import Settings, SettingsError

REQUIRED = {"SAGEMAKER_ENDPOINT_NAME": "e", "CHAT_TABLE_NAME": "t"}


def settings(monkeypatch, **variables):
    for name in list(Settings.model_fields):
        monkeypatch.delenv(Settings.model_fields[name].alias, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return Settings.from_environment()


def test_defaults_suit_llama2_context(monkeypatch):
    s = settings(monkeypatch, **REQUIRED)

    assert (s.max_input_tokens, s.max_total_tokens, s.max_new_tokens) == (3584, 4096, 512)
    assert s.prompt_token_budget == 3584
    assert s.max_query_chars == 3000 and s.history_ttl_days == 30 and s.stop_sequences == ["[INST]"]


def test_values_are_parsed_from_strings(monkeypatch):
    s = settings(monkeypatch, **REQUIRED, MAX_NEW_TOKENS="1024", TEMPERATURE="0.2", STOP_SEQUENCES='["</s>", "User:"]')

    assert s.max_new_tokens == 1024 and s.temperature == 0.2 and s.stop_sequences == ["</s>", "User:"]
    assert s.prompt_token_budget == 4096 - 1024


@pytest.mark.parametrize(
    "variables, named",
    [
        ({}, "SAGEMAKER_ENDPOINT_NAME"),
        ({"SAGEMAKER_ENDPOINT_NAME": "e"}, "CHAT_TABLE_NAME"),
        ({**REQUIRED, "MAX_NEW_TOKENS": "lots"}, "MAX_NEW_TOKENS"),
        ({**REQUIRED, "TOP_P": "1"}, "TOP_P"),
        ({**REQUIRED, "STOP_SEQUENCES": "[INST]"}, "STOP_SEQUENCES"),
        ({**REQUIRED, "MAX_NEW_TOKENS": "4096"}, "MAX_TOTAL_TOKENS must be larger than MAX_NEW_TOKENS"),
    ],
)
def test_a_missing_or_bad_setting_fails_with_its_name(monkeypatch, variables, named):
    with pytest.raises(SettingsError, match=named.replace("[", r"\[")):
        settings(monkeypatch, **variables)


@pytest.mark.parametrize("stage", ["dev", "prod", "local"])
def test_every_stage_of_the_chalice_config_has_valid_settings(monkeypatch, stage):
    config = json.loads((Path(__file__).parent.parent / ".chalice" / "config.json").read_text())
    variables = {**config["environment_variables"], **config["stages"][stage]["environment_variables"]}

    s = settings(monkeypatch, **variables)

    assert s.sagemaker_endpoint_name.startswith("llama2-chatbot-")
    assert s.chat_table_name == f"{s.sagemaker_endpoint_name}-chat"
