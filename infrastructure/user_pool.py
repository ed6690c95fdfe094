"""Sign-in: a Cognito user pool whose tokens the API accepts, and a public app client for the chat page.

The page signs in through Cognito's own API (`InitiateAuth` with USER_PASSWORD_AUTH, then
REFRESH_TOKEN_AUTH), so the client has no secret (a browser cannot keep one) and no OAuth
hosted-UI flows.
"""

import aws_cdk as cdk
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from infrastructure import stack_names

ACCESS_TOKEN_VALIDITY = cdk.Duration.hours(1)
REFRESH_TOKEN_VALIDITY = cdk.Duration.days(30)
MIN_PASSWORD_LENGTH = 12


class UserPool(Construct):
    """Users sign in with their e-mail address. An administrator creates them (docs/deploy.md), unless
    `self_sign_up`; Plus (threat protection) only when `plus_tier`, since it bills every
    monthly active user."""

    def __init__(
        self, scope: Construct, construct_id: str, *, stage: str, self_sign_up: bool, plus_tier: bool, retain: bool
    ):
        super().__init__(scope, construct_id)
        self.pool = cognito.UserPool(
            self,
            "Pool",
            user_pool_name=stack_names.user_pool_name(stage),
            self_sign_up_enabled=self_sign_up,
            sign_in_aliases=cognito.SignInAliases(email=True),
            sign_in_case_sensitive=False,
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=True, mutable=True)
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            password_policy=cognito.PasswordPolicy(
                min_length=MIN_PASSWORD_LENGTH,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=cdk.Duration.days(7),
            ),
            mfa=cognito.Mfa.OFF,
            feature_plan=cognito.FeaturePlan.PLUS if plus_tier else cognito.FeaturePlan.ESSENTIALS,
            standard_threat_protection_mode=(
                cognito.StandardThreatProtectionMode.FULL_FUNCTION if plus_tier else None
            ),
            # Conversations are keyed by the user's `sub`, which a new pool would not give back:
            # keep the pool with the table, unless asked otherwise.
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
        )
        self.client = self.pool.add_client(
            "PageClient",
            user_pool_client_name=f"{stack_names.user_pool_name(stage)}-page",
            generate_secret=False,
            # CDK adds ALLOW_REFRESH_TOKEN_AUTH to every client.
            auth_flows=cognito.AuthFlow(user_password=True),
            disable_o_auth=True,
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            access_token_validity=ACCESS_TOKEN_VALIDITY,
            id_token_validity=ACCESS_TOKEN_VALIDITY,
            refresh_token_validity=REFRESH_TOKEN_VALIDITY,
        )
        acknowledgments = [
            cdk.Acknowledgment(
                id="AwsSolutions-COG2",
                reason="The chat page signs in with USER_PASSWORD_AUTH and answers only the new-password "
                "challenge; required MFA would lock every user out until the page enrols an authenticator. "
                "The pool guards chat history and GPU time, and has a strong password policy.",
            )
        ]
        if not plus_tier:
            acknowledgments.append(
                cdk.Acknowledgment(
                    id="AwsSolutions-COG8",
                    reason="Plus (threat protection) bills every monthly active user with no free tier; "
                    "a demo with administrator-created users is on Essentials. -c cognito_plus_tier=true "
                    "switches it on.",
                )
            )
        cdk.Validations.of(self.pool).acknowledge(*acknowledgments)
