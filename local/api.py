"""The `api` process of `make run`: wait for the local servers, create the table, the turns
topic and queues and the user pool, wait for the WebSocket gateway (the page connects to it), then
say where everything is and serve the REST API as `chalice local` does, except that Cognito tokens
are verified.

`chalice local` stands in for API Gateway's Cognito authorizer by decoding the token's payload
unverified: any made-up token would pass. This server runs Chalice's own local gateway with an
authorizer that verifies the token as API Gateway would (chalicelib/auth.py), and refuses with 401.
"""

import argparse
import functools
import json
import os
import time

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
from chalicelib.errors import ServiceError, Unauthorized, error_body
from infrastructure import stack_names
from local.cognito import create_local_user_pool
from local.logs import OneLinePerRequest, quiet_stand_ins
from local.messaging import create_turns_queue
from local.readiness import Readiness, service
from local.readiness import add_arguments as add_wait_arguments
from local.settings import DEFAULT_PORT, STAGE, chalice_factory, function_limits, stage_environment
from local.table import ensure_table


class Refused(LocalGatewayException):
    """An authorizer's refusal, with the service's JSON error."""

    def __init__(self, error: ServiceError):
        super().__init__({"Content-Type": "application/json"}, json.dumps(error_body(error)).encode())
        self.CODE = error.status_code


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750 2.1), the one form the page,
    the client and the README send; None without the header. Anything else is Unauthorized, and only
    spaces and tabs around it are trimmed, as an HTTP parser does: the verifier judges the rest."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("the Authorization header must be 'Bearer <ID token>'")
    return token.lstrip(" ")


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


class VerifyingRequestHandler(OneLinePerRequest, ChaliceRequestHandler):
    """Chalice's, with the verifying gateway, and one line per request in make run's log (a path
    without its query string, which holds a GET /chat's question: a user's text is never logged)."""

    def __init__(self, request, client_address, server, app_object, config):
        self.local_gateway = VerifyingGateway(app_object, config)
        # The base class handles the request as it is built: the gateway must be set first.
        super(ChaliceRequestHandler, self).__init__(request, client_address, server)


def verifying_server(app, config, host: str, port: int):
    """Chalice's local server (a thread per request) for `app`, with the verifying gateway."""
    server = create_local_server(app, config, host, port)
    server.server.RequestHandlerClass = functools.partial(VerifyingRequestHandler, app_object=app, config=config)
    return server


def ready_screen(port: int, started_seconds: float, settings: dict, table_created: bool, turns, pool) -> str:
    """What make run prints once it serves: where everything is, to begin with the page."""
    endpoints = {name: os.environ[f"AWS_ENDPOINT_URL_{name}"]
                 for name in ("DYNAMODB", "SAGEMAKER_RUNTIME", "SQS", "COGNITO_IDENTITY_PROVIDER")}
    token = "TOKEN=$(make -s token)" if port == DEFAULT_PORT else f"TOKEN=$(PORT={port} make -s token)"
    return "\n".join([
        f"make run is ready after {started_seconds:.0f} s:",
        f"  chat page:     http://127.0.0.1:{port}/ (it signs in {os.environ['LOCAL_USER_NAME']} by itself)",
        f"  REST API:      http://127.0.0.1:{port}/chat (an ID token for curl: {token})",
        f"  WebSocket API: {os.environ['WEBSOCKET_URL']}",
        f"  DynamoDB:      {endpoints['DYNAMODB']}, table {settings['CHAT_TABLE_NAME']} "
        f"({'created' if table_created else 'found'})",
        f"  model:         {endpoints['SAGEMAKER_RUNTIME']}, endpoint {settings['SAGEMAKER_ENDPOINT_NAME']}",
        f"  SNS and SQS:   {endpoints['SQS']}, topic {turns.topic_arn.rsplit(':', 1)[-1]} -> queue {turns.queue_url}",
        f"  Cognito:       {endpoints['COGNITO_IDENTITY_PROVIDER']}, user pool {pool.pool_id}, "
        f"user sub {pool.user_sub}",
        "One line per request follows (VERBOSE=1 make run: the stand-ins' own lines too); Ctrl-C stops everything.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    add_wait_arguments(parser)
    parser.add_argument("--serve-after", action="append", type=service, default=[], metavar="NAME=URL",
                        help="serve only once URL answers, as what the page connects to besides this API")
    args = parser.parse_args()
    readiness = Readiness("api")
    quiet_stand_ins()
    # As `chalice local --stage local` does: the stage's environment, and the checks deploy would make.
    # First, while the stand-ins start: the app's imports take seconds.
    config = chalice_factory().create_config_obj(chalice_stage_name=STAGE)
    validate_routes(config.chalice_app.routes)
    settings = stage_environment()

    readiness.wait(args.wait_for)
    table_created = ensure_table(boto3.client("dynamodb"), settings["CHAT_TABLE_NAME"])
    # Redelivery after a failure waits the visibility timeout: the worker's timeout, the least Lambda
    # accepts (so a turn still being answered is never delivered to a second worker).
    worker = function_limits(stack_names.TURNS_WORKER_HANDLER)
    turns = create_turns_queue(boto3.client("sns"), boto3.client("sqs"), settings["TURNS_TOPIC_ARN"],
                               settings["TURNS_QUEUE_NAME"], visibility_timeout=worker.timeout_seconds)
    pool = create_local_user_pool(boto3.client("cognito-idp"), os.environ["AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"])
    readiness.wait(args.serve_after)

    server = verifying_server(config.chalice_app, config, "127.0.0.1", args.port)
    seconds = time.monotonic() - readiness.started
    print(ready_screen(args.port, seconds, settings, table_created, turns, pool), flush=True)
    try:
        server.server.serve_forever()  # not the LocalDevServer's, which prints its address again
    except KeyboardInterrupt:
        pass  # Ctrl-C: honcho stops every process


if __name__ == "__main__":
    main()
