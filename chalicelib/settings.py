"""Settings from environment variables: the one place their names, types and defaults live.

`.chalice/config.json` sets them per stage; the CDK stack and the local launcher
read the defaults below rather than repeating them.
"""

import functools
import os
import urllib.parse
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, Json, ValidationError, model_validator

from chalicelib.errors import SettingsError
from chalicelib.token_bounds import DEFAULT_MODEL_ID, MODELS, ChatModel

# Llama 2 has a 4096-token context: the endpoint accepts up to MAX_INPUT_TOKENS of
# prompt, and prompt plus answer up to MAX_TOTAL_TOKENS.
DEFAULT_MAX_INPUT_TOKENS = 3584
DEFAULT_MAX_TOTAL_TOKENS = 4096
DEFAULT_MAX_NEW_TOKENS = 512

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _family_stop_sequences(fields: dict) -> list[str]:
    """STOP_SEQUENCES' default, from the fields validated before it: the model family's. Llama 2's
    is "[INST]", because it sometimes starts a new user turn itself, in plain text; the others end
    with their own end token, which the containers stop on. An unknown MODEL_ID has none (its own
    error reports it)."""
    model = MODELS.get(fields.get("model_id"))
    return list(model.family.stop_sequences) if model else []


class Settings(BaseModel):
    """The service's configuration; field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sagemaker_endpoint_name: str = Field(alias="SAGEMAKER_ENDPOINT_NAME", min_length=1)
    chat_table_name: str = Field(alias="CHAT_TABLE_NAME", min_length=1)
    # Set when the endpoint serves the model through an inference component (scale to zero):
    # every invocation must then name it. `make config` records it from the stack.
    sagemaker_inference_component_name: str | None = Field(
        None, alias="SAGEMAKER_INFERENCE_COMPONENT_NAME", min_length=1
    )

    # The container that serves the model, whose protocol the app speaks (docs/serving.md): Hugging
    # Face TGI, or the AWS vLLM DLC (vLLM's OpenAI server). `make config` records the stack's.
    serving: Literal["tgi", "vllm"] = Field("tgi", alias="SERVING")
    # The Hugging Face id of the deployed model, one of those documented (chalicelib/token_bounds.py
    # MODELS): its family sets the token bounds, the prompt markers and the default stop sequences,
    # its name is what the page shows. `make config` records the stack's.
    model_id: Literal[tuple(MODELS)] = Field(DEFAULT_MODEL_ID, alias="MODEL_ID")
    # What the page calls the model when it is none of those (make run's local one sets it);
    # unset, MODEL_ID's name. The token bounds stay MODEL_ID's family's.
    model_name: str | None = Field(None, alias="MODEL_NAME", min_length=1, max_length=100)

    max_input_tokens: int = Field(DEFAULT_MAX_INPUT_TOKENS, alias="MAX_INPUT_TOKENS", gt=0)
    max_total_tokens: int = Field(DEFAULT_MAX_TOTAL_TOKENS, alias="MAX_TOTAL_TOKENS", gt=0)
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, alias="MAX_NEW_TOKENS", gt=0)

    system_prompt: str = Field(
        "You are a helpful, respectful and honest assistant. Answer briefly and accurately.",
        alias="SYSTEM_PROMPT",
    )
    temperature: float = Field(0.6, alias="TEMPERATURE", gt=0)
    # TGI refuses top_p = 1.0 (it must be below 1).
    top_p: float = Field(0.9, alias="TOP_P", gt=0, lt=1)
    # A JSON list, e.g. '["[INST]"]'; unset, the model family's (_family_stop_sequences).
    stop_sequences: Json[list[str]] = Field(default_factory=_family_stop_sequences,
                                            alias="STOP_SEQUENCES", max_length=4)

    # 3000 ASCII characters fit the default prompt budget with the token bound.
    max_query_chars: int = Field(3000, alias="MAX_QUERY_CHARS", gt=0)
    history_max_turns: int = Field(20, alias="HISTORY_MAX_TURNS", ge=0)
    history_ttl_days: int = Field(30, alias="HISTORY_TTL_DAYS", gt=0)
    # New turns a user may start a minute (REST and WebSocket alike); more are refused with 429.
    turns_per_minute: int = Field(10, alias="TURNS_PER_MINUTE", gt=0)
    # API Gateway gives up after 29 s: every request answers within this deadline,
    # with its own JSON (chalicelib/deadline.py).
    request_timeout_seconds: float = Field(27, alias="REQUEST_TIMEOUT_SECONDS", gt=0, le=28)
    # The longest wait for the model; less when the request's deadline leaves less.
    model_timeout_seconds: float = Field(20, alias="MODEL_TIMEOUT_SECONDS", gt=0)

    # Asynchronous turns (WebSocket and POST /chat {"async": true}): the SNS topic that hands
    # them to the worker, and how long the worker may take for one (its Lambda timeout).
    turns_topic_arn: str | None = Field(None, alias="TURNS_TOPIC_ARN", min_length=1)
    # The queue subscribed to it, which the worker reads (app.py gives it to Chalice at deploy time).
    turns_queue_name: str | None = Field(None, alias="TURNS_QUEUE_NAME", min_length=1)
    worker_timeout_seconds: float = Field(300, alias="WORKER_TIMEOUT_SECONDS", gt=0, le=900)
    # How many workers the queue's event source runs at once (read by `chalice deploy`): what the
    # endpoint generates at once at its most copies, which `make config` records from the stack here
    # and as the turn worker's reserved concurrency (docs/capacity.md). SQS event sources need 2.
    worker_concurrency: int = Field(2, alias="WORKER_CONCURRENCY", ge=2, le=1000)
    # The WebSocket API's URL, which GET /config gives the page (`make config` records it once
    # `chalice deploy` has created the API; make run sets it). Unset: the page uses POST /chat.
    websocket_url: str | None = Field(None, alias="WEBSOCKET_URL", pattern=r"^wss?://[^/\s]+(/\S*)?$")

    # Sign-in: the Cognito user pool whose ID tokens the service accepts and the page's app client
    # (`make config` records both; unset: no sign-in, GET /config gives the page none).
    user_pool_id: str | None = Field(None, alias="USER_POOL_ID", pattern=r"^[\w-]+_[0-9a-zA-Z]+$", max_length=55)
    user_pool_client_id: str | None = Field(None, alias="USER_POOL_CLIENT_ID", pattern=r"^[\w+]+$", max_length=128)
    # Lambda sets AWS_REGION; botocore reads AWS_DEFAULT_REGION (tests and local tools set that one).
    region: str | None = Field(None, alias="AWS_REGION", pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$",
                               validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    # botocore's own variable for another Cognito endpoint (make run's local stand-in).
    cognito_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER",
                                             pattern=r"^https?://[^/\s]+/?$")
    # make run's one local user, whom the page signs in by itself; only with a loopback Cognito.
    local_user_name: str | None = Field(None, alias="LOCAL_USER_NAME", min_length=1)
    local_user_password: str | None = Field(None, alias="LOCAL_USER_PASSWORD", min_length=1)

    @property
    def model(self) -> ChatModel:
        return MODELS[self.model_id]

    @property
    def model_display_name(self) -> str:
        """What the page calls the model that answers."""
        return self.model_name or self.model.display_name

    @property
    def sign_in_enabled(self) -> bool:
        return self.user_pool_id is not None

    @property
    def cognito_endpoint(self) -> str:
        """Cognito's API (InitiateAuth and the pool's JWKS): AWS's in the region, unless overridden."""
        return (self.cognito_endpoint_url or f"https://cognito-idp.{self.region}.amazonaws.com").rstrip("/")

    @property
    def user_pool_issuer(self) -> str:
        """The `iss` of the pool's tokens: always AWS's URL, wherever the endpoint is."""
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def user_pool_jwks_url(self) -> str:
        return f"{self.cognito_endpoint}/{self.user_pool_id}/.well-known/jwks.json"
    # Observability: the least level logged (the app's own loggers; libraries log from INFO up,
    # so that no library's debug line carries a user's text), and the stage the metrics name
    # (their `Stage` dimension, which the stack's dashboard and alarms read).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")
    stage: str = Field("local", alias="STAGE", pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @property
    def websocket_origin(self) -> str | None:
        """The WebSocket URL's origin, which the page's CSP lets it connect to."""
        if self.websocket_url is None:
            return None
        scheme, _, rest = self.websocket_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    @model_validator(mode="after")
    def _room_for_a_prompt(self) -> "Settings":
        # TGI refuses to start unless MAX_INPUT_TOKENS < MAX_TOTAL_TOKENS; the CDK stack
        # validates its endpoint's limits with this model, so the rule lives here once.
        if self.max_input_tokens >= self.max_total_tokens:
            raise ValueError("MAX_INPUT_TOKENS must be less than MAX_TOTAL_TOKENS (TGI)")
        if self.prompt_token_budget <= 0:
            raise ValueError("MAX_TOTAL_TOKENS must be larger than MAX_NEW_TOKENS")
        return self

    @model_validator(mode="after")
    def _sign_in_is_whole(self) -> "Settings":
        if (self.user_pool_id is None) != (self.user_pool_client_id is None):
            raise ValueError("USER_POOL_ID and USER_POOL_CLIENT_ID go together")
        if self.sign_in_enabled and self.region is None:
            raise ValueError("sign-in needs the pool's region: AWS_REGION or AWS_DEFAULT_REGION")
        return self

    @model_validator(mode="after")
    def _local_user_only_locally(self) -> "Settings":
        # The page signs the local user in by itself: a password handed to every visitor. It may
        # only exist where Cognito is a stand-in on this machine, never in a deployed stage.
        if self.local_user_name is None and self.local_user_password is None:
            return self
        if self.local_user_name is None or self.local_user_password is None:
            raise ValueError("LOCAL_USER_NAME and LOCAL_USER_PASSWORD go together")
        host = urllib.parse.urlsplit(self.cognito_endpoint_url or "").hostname
        if not self.sign_in_enabled or host not in LOOPBACK_HOSTS:
            raise ValueError("a local user needs a local Cognito: AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER "
                             "on 127.0.0.1 or localhost, and USER_POOL_ID")
        return self

    @property
    def prompt_token_budget(self) -> int:
        """Most tokens a prompt may have so that the endpoint accepts it with MAX_NEW_TOKENS."""
        return min(self.max_input_tokens, self.max_total_tokens - self.max_new_tokens)

    @classmethod
    def from_environment(cls) -> "Settings":
        try:
            return cls.model_validate(dict(os.environ))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors()
            )
            raise SettingsError(f"invalid settings: {problems}") from None


@functools.cache
def get_settings() -> Settings:
    """The settings of this container, read once."""
    return Settings.from_environment()
