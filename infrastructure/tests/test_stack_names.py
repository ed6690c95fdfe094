"""The names in `stack_names` match what the Chalice config and the chat service's settings use."""

import json
from pathlib import Path

import pytest

from chalicelib.settings import Settings
from infrastructure import stack_names

CONFIG = json.loads((Path(__file__).resolve().parents[2] / ".chalice" / "config.json").read_text())


def test_app_name_is_chalices():
    assert stack_names.APP_NAME == CONFIG["app_name"]


@pytest.mark.parametrize("stage", sorted(CONFIG["stages"]))
def test_stage_defaults_name_the_stacks_resources(stage):
    environment = CONFIG["stages"][stage]["environment_variables"]
    assert environment["SAGEMAKER_ENDPOINT_NAME"] == stack_names.endpoint_name(stage)
    assert environment["CHAT_TABLE_NAME"] == stack_names.table_name(stage)


# Agreed with the app side of issues 9, 11 and 12, which reads them; remove each name from
# here once the service reads it.
NOT_YET_READ_BY_THE_SERVICE = {
    "USER_POOL_ARN",
}


def test_recorded_variables_are_settings_the_service_reads():
    aliases = {field.alias for field in Settings.model_fields.values()}
    recorded = {*stack_names.ENVIRONMENT_OUTPUTS, *stack_names.OPTIONAL_ENVIRONMENT_OUTPUTS}
    assert recorded - aliases <= NOT_YET_READ_BY_THE_SERVICE
