"""The `api` process of `make run`: wait for the local servers, create the table, the turns
topic and queues and the user pool, then serve the REST API as `chalice local` does, except that
Cognito tokens are verified.

`chalice local` stands in for API Gateway's Cognito authorizer by decoding the token's payload
unverified: any made-up token would pass. This server runs Chalice's own local gateway with an
authorizer that verifies the token as API Gateway would (chalicelib/auth.py), and refuses with 401.
"""

import argparse
import functools
import json
import os

import boto3
from chalice.app import CognitoUserPoolAuthorizer
from chalice.deploy.validate import validate_routes
from chalice.local import (
    ChaliceRequestHandler,
    LocalGateway,
    LocalGatewayAuthorizer,
    LocalGatewayException,
    create_local_server,
)

from chalicelib import services
from chalicelib.errors import ServiceError, error_body
from local.cognito import create_local_user_pool
from local.messaging import create_turns_queue
from local.net import wait_until_up
from local.settings import STAGE, chalice_factory, function_limits, stage_environment
from local.table import ensure_table, local_table_name


class Refused(LocalGatewayException):
    """An authorizer's refusal, with the service's JSON error."""

    def __init__(self, error: ServiceError):
        super().__init__({"Content-Type": "application/json"}, json.dumps(error_body(error)).encode())
        self.CODE = error.status_code


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization` header, with or without the `Bearer ` scheme."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else authorization.strip()


class VerifyingAuthorizer(LocalGatewayAuthorizer):
    """Routes with a CognitoUserPoolAuthorizer get the verified token's claims, as API Gateway
    passes them; other routes are Chalice's business."""

    def authorize(self, raw_path, lambda_event, lambda_context):
        route = self._route_for_event(lambda_event)
        if route is None or not isinstance(route.authorizer, CognitoUserPoolAuthorizer):
            return super().authorize(raw_path, lambda_event, lambda_context)
        try:
            claims = services.token_verifier().verify(bearer_token(lambda_event["headers"].get("authorization")))
        except ServiceError as error:
            raise Refused(error) from None
        return self._update_lambda_event(lambda_event, {"context": {"claims": claims},
                                                        "principalId": claims["sub"]}), lambda_context


class VerifyingGateway(LocalGateway):
    def __init__(self, app_object, config):
        super().__init__(app_object, config)
        self._authorizer = VerifyingAuthorizer(app_object)


class VerifyingRequestHandler(ChaliceRequestHandler):
    def __init__(self, request, client_address, server, app_object, config):
        self.local_gateway = VerifyingGateway(app_object, config)
        # The base class handles the request as it is built: the gateway must be set first.
        super(ChaliceRequestHandler, self).__init__(request, client_address, server)


def verifying_server(app, config, host: str, port: int):
    """Chalice's local server (a thread per request) for `app`, with the verifying gateway."""
    server = create_local_server(app, config, host, port)
    server.server.RequestHandlerClass = functools.partial(VerifyingRequestHandler, app_object=app, config=config)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wait-for", action="append", default=[], metavar="URL")
    args = parser.parse_args()

    for url in args.wait_for:
        try:
            wait_until_up(url, timeout=120)
        except TimeoutError as error:
            raise SystemExit(f"api: {error}") from None
    table_name = local_table_name()
    created = ensure_table(boto3.client("dynamodb"), table_name)
    print(f"table {table_name} {'created' if created else 'found'} at {os.environ['AWS_ENDPOINT_URL_DYNAMODB']}")
    settings = stage_environment()
    # Redelivery after a failure waits the visibility timeout: the function's timeout, the least Lambda accepts.
    turns = create_turns_queue(boto3.client("sns"), boto3.client("sqs"), settings["TURNS_TOPIC_ARN"],
                               settings["TURNS_QUEUE_NAME"], visibility_timeout=function_limits().timeout_seconds)
    print(f"topic {turns.topic_arn} -> queue {turns.queue_url} (dead letters: {turns.dead_letter_queue_url})")
    cognito_endpoint = os.environ["AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"]
    pool = create_local_user_pool(boto3.client("cognito-idp"), cognito_endpoint)
    print(f"user pool {pool.pool_id} at {cognito_endpoint}: the page signs in {os.environ['LOCAL_USER_NAME']} "
          f"(sub {pool.user_sub})")
    print(f"WebSocket API: {os.environ['WEBSOCKET_URL']}")
    print(f"chat page: http://127.0.0.1:{args.port}/")
    # As `chalice local --stage local` does: the stage's environment, and the checks deploy would make.
    config = chalice_factory().create_config_obj(chalice_stage_name=STAGE)
    validate_routes(config.chalice_app.routes)
    server = verifying_server(config.chalice_app, config, "127.0.0.1", args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # Ctrl-C: honcho stops every process


if __name__ == "__main__":
    main()
