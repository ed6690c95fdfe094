"""Settings come from the environment; each stage of .chalice/config.json is complete."""

import json
from pathlib import Path

import pytest

from chalicelib.settings import Settings, SettingsError
from infrastructure.stack_names import ENVIRONMENT_OUTPUTS

REQUIRED = {"SAGEMAKER_ENDPOINT_NAME": "e", "CHAT_TABLE_NAME": "t"}
CONFIG = json.loads((Path(__file__).parent.parent / ".chalice" / "config.json").read_text())
# Where .chalice/config.json may set environment variables: the top level and each stage.
CONFIG_SECTIONS = {"top level": CONFIG, **{f"stage {name}": stage for name, stage in CONFIG["stages"].items()}}


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
    assert s.serving == "tgi"


def test_values_are_parsed_from_strings(monkeypatch):
    s = settings(monkeypatch, **REQUIRED, MAX_NEW_TOKENS="1024", TEMPERATURE="0.2", STOP_SEQUENCES='["</s>", "User:"]')

    assert s.max_new_tokens == 1024 and s.temperature == 0.2 and s.stop_sequences == ["</s>", "User:"]
    assert s.prompt_token_budget == 4096 - 1024


@pytest.mark.parametrize("model_id, stops, name", [
    ("meta-llama/Llama-2-7b-chat-hf", ["[INST]"], "Llama 2 7B Chat"),
    ("meta-llama/Llama-3.1-8B-Instruct", [], "Llama 3.1 8B Instruct"),
    ("mistralai/Mistral-7B-Instruct-v0.3", [], "Mistral 7B Instruct v0.3"),
])
def test_the_model_id_names_the_model_and_its_familys_stop_sequences(monkeypatch, model_id, stops, name):
    s = settings(monkeypatch, **REQUIRED, MODEL_ID=model_id)
    assert (s.stop_sequences, s.model.display_name) == (stops, name)

    assert settings(monkeypatch, **REQUIRED, MODEL_ID=model_id, STOP_SEQUENCES='["User:"]').stop_sequences == ["User:"]
    # The field's own default is the family's (one home: no fixed default beside a validator's).
    field = Settings.model_fields["stop_sequences"]
    assert field.get_default(call_default_factory=True, validated_data={"model_id": model_id}) == stops


@pytest.mark.parametrize(
    "variables, named",
    [
        ({}, "SAGEMAKER_ENDPOINT_NAME"),
        ({"SAGEMAKER_ENDPOINT_NAME": "e"}, "CHAT_TABLE_NAME"),
        ({**REQUIRED, "MAX_NEW_TOKENS": "lots"}, "MAX_NEW_TOKENS"),
        ({**REQUIRED, "TOP_P": "1"}, "TOP_P"),
        ({**REQUIRED, "STOP_SEQUENCES": "[INST]"}, "STOP_SEQUENCES"),
        ({**REQUIRED, "SERVING": "lmi"}, "SERVING"),
        ({**REQUIRED, "MODEL_ID": "meta-llama/Llama-3.2-1B-Instruct"}, "MODEL_ID"),
        ({**REQUIRED, "MAX_NEW_TOKENS": "4096"}, "MAX_TOTAL_TOKENS must be larger than MAX_NEW_TOKENS"),
        ({**REQUIRED, "MAX_INPUT_TOKENS": "4096"}, "MAX_INPUT_TOKENS must be less than MAX_TOTAL_TOKENS"),
        ({**REQUIRED, "MAX_TOTAL_TOKENS": "2048"}, "MAX_INPUT_TOKENS must be less than MAX_TOTAL_TOKENS"),
    ],
)
def test_a_missing_or_bad_setting_fails_with_its_name(monkeypatch, variables, named):
    with pytest.raises(SettingsError, match=named.replace("[", r"\[")):
        settings(monkeypatch, **variables)


@pytest.mark.parametrize("stage", ["dev", "prod", "local"])
def test_every_stage_of_the_chalice_config_has_valid_settings(monkeypatch, stage):
    variables = {**CONFIG.get("environment_variables", {}), **CONFIG["stages"][stage]["environment_variables"]}

    s = settings(monkeypatch, **variables)

    assert s.sagemaker_endpoint_name.startswith("llama2-chatbot-")
    assert s.chat_table_name == f"{s.sagemaker_endpoint_name}-chat"


@pytest.mark.parametrize("where", CONFIG_SECTIONS)
def test_no_part_of_the_chalice_config_repeats_a_default(monkeypatch, where):
    """A stage sets only what differs, so a default changes in one place, settings.py.

    The variables `make config` records from the deployed stack are exempt: they describe
    that endpoint, and must stay as it was deployed even if a default changes later.
    """
    set_here = CONFIG_SECTIONS[where].get("environment_variables", {})
    fields = {field.alias: name for name, field in Settings.model_fields.items()}
    defaults = settings(monkeypatch, **REQUIRED)
    assert set(set_here) <= set(fields), "a variable that Settings does not read"

    repeated = [
        variable
        for variable, value in set_here.items()
        if variable not in ENVIRONMENT_OUTPUTS
        and getattr(settings(monkeypatch, **REQUIRED, **{variable: value}), fields[variable])
        == getattr(defaults, fields[variable])
    ]

    assert repeated == []


def test_make_runs_worker_has_the_timeout_its_settings_give_a_turn(monkeypatch):
    """As `make config` does for a deployed stage: a local turn may take WORKER_TIMEOUT_SECONDS,
    and the queue hides a turn being answered that long (local/api.py)."""
    from infrastructure.stack_names import TURNS_WORKER_HANDLER
    from local.settings import function_limits, stage_environment

    local = settings(monkeypatch, **stage_environment())

    assert function_limits(TURNS_WORKER_HANDLER).timeout_seconds == local.worker_timeout_seconds
