"""The user pool and the chat page's app client: who may sign up, passwords, tokens, outputs."""

import dataclasses

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks
from templates import build, only

from infrastructure.chatbot_stack import ChatbotConfig


@pytest.fixture(scope="module")
def open_stack():
    return build(ChatbotConfig(self_sign_up=True, cognito_plus_tier=True, retain_user_pool=False))


def test_only_administrators_create_users_unless_asked(template, open_stack):
    template.has_resource_properties(
        "AWS::Cognito::UserPool",
        {"UserPoolName": "llama2-chatbot-dev", "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True}},
    )
    Template.from_stack(open_stack).has_resource_properties(
        "AWS::Cognito::UserPool", {"AdminCreateUserConfig": {"AllowAdminCreateUserOnly": False}}
    )


def test_users_sign_in_with_a_verified_email_and_a_strong_password(template):
    template.has_resource_properties(
        "AWS::Cognito::UserPool",
        {
            "UsernameAttributes": ["email"],
            "UsernameConfiguration": {"CaseSensitive": False},
            "AutoVerifiedAttributes": ["email"],
            "AccountRecoverySetting": {"RecoveryMechanisms": [{"Name": "verified_email", "Priority": 1}]},
            "Policies": {
                "PasswordPolicy": {
                    "MinimumLength": 12,
                    "RequireLowercase": True,
                    "RequireUppercase": True,
                    "RequireNumbers": True,
                    "RequireSymbols": True,
                    "TemporaryPasswordValidityDays": 7,
                }
            },
        },
    )


def test_plus_tier_and_threat_protection_only_when_asked(template, open_stack):
    template.has_resource_properties(
        "AWS::Cognito::UserPool", {"UserPoolTier": "ESSENTIALS", "UserPoolAddOns": Match.absent()}
    )
    Template.from_stack(open_stack).has_resource_properties(
        "AWS::Cognito::UserPool", {"UserPoolTier": "PLUS", "UserPoolAddOns": {"AdvancedSecurityMode": "ENFORCED"}}
    )


def test_the_pool_outlives_the_stack_unless_asked(template, open_stack):
    template.has_resource("AWS::Cognito::UserPool", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"})
    Template.from_stack(open_stack).has_resource("AWS::Cognito::UserPool", {"DeletionPolicy": "Delete"})


def test_page_client_is_public_with_password_and_refresh_auth_only(template):
    pool_id, _ = only(template, "AWS::Cognito::UserPool")
    _, client = only(template, "AWS::Cognito::UserPoolClient")
    properties = client["Properties"]
    assert properties["UserPoolId"] == {"Ref": pool_id}
    assert properties["GenerateSecret"] is False
    assert sorted(properties["ExplicitAuthFlows"]) == ["ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_PASSWORD_AUTH"]
    assert properties["AllowedOAuthFlowsUserPoolClient"] is False
    assert "CallbackURLs" not in properties
    assert properties["PreventUserExistenceErrors"] == "ENABLED"
    assert properties["EnableTokenRevocation"] is True


def test_tokens_last_an_hour_and_the_refresh_token_thirty_days(template):
    _, client = only(template, "AWS::Cognito::UserPoolClient")
    properties = client["Properties"]
    assert properties["TokenValidityUnits"] == {
        "AccessToken": "minutes",
        "IdToken": "minutes",
        "RefreshToken": "minutes",
    }
    assert (properties["AccessTokenValidity"], properties["IdTokenValidity"]) == (60, 60)
    assert properties["RefreshTokenValidity"] == 30 * 24 * 60


def test_outputs_carry_the_pool_and_client(template):
    pool_id, _ = only(template, "AWS::Cognito::UserPool")
    client_id, _ = only(template, "AWS::Cognito::UserPoolClient")
    template.has_output("UserPoolId", {"Value": {"Ref": pool_id}})
    template.has_output("UserPoolArn", {"Value": {"Fn::GetAtt": [pool_id, "Arn"]}})
    template.has_output("UserPoolClientId", {"Value": {"Ref": client_id}})


def test_every_option_passes_aws_solutions_checks(open_stack):
    report = AwsSolutionsChecks().validate_scope(open_stack)
    assert [violation.rule_name for violation in report.violations] == []


def test_context_switches_sign_up_and_plus_tier_on():
    app = cdk.App(context={"self_sign_up": "true", "cognito_plus_tier": "true", "retain_user_pool": "false"})
    assert ChatbotConfig.from_context(app.node) == dataclasses.replace(
        ChatbotConfig.from_context(cdk.App().node), self_sign_up=True, cognito_plus_tier=True, retain_user_pool=False
    )
