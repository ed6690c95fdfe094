"""Sign-in settings: the local user exists only with a Cognito on this machine, so no deployed
stage can hand the page a password; the pool `make config` records reaches the app."""

import copy
import json
from pathlib import Path

import pytest

from chalicelib import auth
from chalicelib.settings import Settings, SettingsError
from infrastructure import record_outputs, stack_names

CONFIG = json.loads((Path(__file__).parent.parent / ".chalice" / "config.json").read_text())
REQUIRED = {"SAGEMAKER_ENDPOINT_NAME": "e", "CHAT_TABLE_NAME": "t", "AWS_REGION": "us-east-1"}
POOL = {"USER_POOL_ID": "us-east-1_AbCdEfGhI", "USER_POOL_CLIENT_ID": "1example23456789example0ab"}
LOCAL_USER = {"LOCAL_USER_NAME": "local@example.com", "LOCAL_USER_PASSWORD": "Local-password-1"}
ENDPOINT = "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4566", "http://localhost:4566/", "http://[::1]:4566"])
def test_a_local_user_needs_a_loopback_cognito(endpoint):
    settings = Settings.model_validate({**REQUIRED, **POOL, **LOCAL_USER, ENDPOINT: endpoint})
    assert auth.sign_in_config(settings)["local_user"] == {"username": "local@example.com",
                                                           "password": "Local-password-1"}
    assert settings.user_pool_jwks_url == f"{endpoint.rstrip('/')}/us-east-1_AbCdEfGhI/.well-known/jwks.json"
    # Tokens name AWS's issuer wherever the API answers.
    assert settings.user_pool_issuer == "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEfGhI"


@pytest.mark.parametrize("variables", [
    {**POOL, **LOCAL_USER},
    {**POOL, **LOCAL_USER, ENDPOINT: "https://cognito-idp.us-east-1.amazonaws.com"},
    {**POOL, **LOCAL_USER, ENDPOINT: "http://127.0.0.1.example.com"},
    {**POOL, **LOCAL_USER, ENDPOINT: "http://10.0.0.1:4566"},
    {**LOCAL_USER, ENDPOINT: "http://127.0.0.1:4566"},
    {**POOL, "LOCAL_USER_NAME": "local", ENDPOINT: "http://127.0.0.1:4566"},
    {"USER_POOL_ID": POOL["USER_POOL_ID"]},
], ids=["no-endpoint", "aws-endpoint", "lookalike-host", "private-address", "no-pool", "no-password", "no-client"])
def test_settings_refuse_a_local_user_anywhere_else(monkeypatch, variables):
    for name, value in {**REQUIRED, **variables}.items():
        monkeypatch.setenv(name, value)
    if "LOCAL_USER_PASSWORD" not in variables:
        monkeypatch.delenv("LOCAL_USER_PASSWORD", raising=False)
    if ENDPOINT not in variables:
        monkeypatch.delenv(ENDPOINT, raising=False)
    with pytest.raises(SettingsError):
        Settings.from_environment()


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_a_deployed_stage_recorded_by_make_config_signs_in_with_its_pool_and_no_local_user(stage):
    outputs = {key: f"{name.lower()}-value" for name, key in stack_names.ENVIRONMENT_OUTPUTS.items()}
    outputs.update({"UserPoolId": "us-east-1_AbCdEfGhI", "UserPoolClientId": "1example23456789example0ab",
                    "MaxInputTokens": "3584", "MaxTotalTokens": "4096", "MaxNewTokens": "512",
                    "Serving": "tgi", "ModelId": "meta-llama/Llama-2-7b-chat-hf", "WorkerTimeoutSeconds": "300",
                    "WorkerConcurrency": "8"})
    config = record_outputs.with_environment(copy.deepcopy(CONFIG), stage, outputs)
    environment = {**CONFIG.get("environment_variables", {}), **config["stages"][stage]["environment_variables"]}

    assert not {ENDPOINT, *LOCAL_USER} & set(environment)
    settings = Settings.model_validate({**environment, "AWS_REGION": "us-east-1"})
    assert auth.sign_in_config(settings) == {"endpoint": "https://cognito-idp.us-east-1.amazonaws.com",
                                             "region": "us-east-1", "client_id": "1example23456789example0ab"}
    # A Lambda function's environment is the stage's: even a local user added by hand is refused there.
    with pytest.raises(ValueError, match="a local user needs a local Cognito"):
        Settings.model_validate({**environment, "AWS_REGION": "us-east-1", **LOCAL_USER})
