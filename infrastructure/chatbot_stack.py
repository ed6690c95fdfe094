"""The chatbot's AWS resources: the model's SageMaker endpoint (Hugging Face TGI or the AWS vLLM DLC,
`serving`, docs/serving.md), the chat table,
the queue of asynchronous turns (`turns.py`), the users' sign-in (`user_pool.py`), scaling the
model to zero (`idle_scaling.py`), the dashboard and alarms (`monitoring.py`) and the log groups
of the functions and the model (`log_groups.py`). How many turns the workers answer at once follows
the endpoint (`capacity.py`): it is an output, which `make config` records for Chalice.

Settings come from CDK context (`cdk deploy -c stage=prod -c autoscaling=true`), with defaults
below; the token limits default to the chat service's own (`chalicelib.settings`).
"""

import dataclasses
import re

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk.aws_applicationautoscaling import CfnScalableTarget, CfnScalingPolicy
from constructs import Construct
from pydantic import ValidationError

from chalicelib import table as chat_table
from chalicelib.settings import (
    DEFAULT_MAX_INPUT_TOKENS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_TOTAL_TOKENS,
    Settings,
)
from chalicelib.token_bounds import DEFAULT_MODEL_ID, MODELS
from infrastructure import capacity, stack_names
from infrastructure.idle_scaling import CopyScaling
from infrastructure.log_groups import RETENTION_DAYS, LogGroups
from infrastructure.monitoring import Monitoring
from infrastructure.turns import TurnsQueue
from infrastructure.user_pool import UserPool

TGI_IMAGE_REPOSITORY = "huggingface-pytorch-tgi-inference"
TGI_IMAGE_TAG = "2.4.0-tgi2.3.1-gpu-py311-cu124-ubuntu22.04"

# Account of the Deep Learning Containers registry in each region, as the SageMaker Python SDK
# lists them for the Hugging Face LLM (TGI) images (image_uri_config/huggingface-llm.json).
TGI_REGISTRY_ACCOUNTS = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-1": "763104351884",
    "ap-northeast-2": "763104351884",
    "ap-south-1": "763104351884",
    "ap-southeast-1": "763104351884",
    "ap-southeast-2": "763104351884",
    "ca-central-1": "763104351884",
    "eu-central-1": "763104351884",
    "eu-north-1": "763104351884",
    "eu-south-1": "692866216735",
    "eu-west-1": "763104351884",
    "eu-west-2": "763104351884",
    "eu-west-3": "763104351884",
    "me-south-1": "217643126080",
    "sa-east-1": "763104351884",
    "us-east-1": "763104351884",
    "us-east-2": "763104351884",
    "us-west-1": "763104351884",
    "us-west-2": "763104351884",
}

# The AWS vLLM DLC for SageMaker: upstream vllm/vllm-openai:v0.27.1 with AWS's SageMaker entrypoint
# (aws/deep-learning-containers .github/config/image/vllm/sagemaker-ubuntu.yml, docs/src/data/vllm/
# 0.27.1-gpu-sagemaker.yml: the tag names the exact vLLM release, whose rules local/vllm.py follows).
VLLM_IMAGE_REPOSITORY = "vllm"
VLLM_IMAGE_TAG = "0.27.1-gpu-py312-cu130-ubuntu22.04-sagemaker"
# Its registries: the DLC accounts as the SageMaker Python SDK lists them for the vLLM DLCs
# (sagemaker-core image_uri_config/huggingface-vllm.json, the commercial regions), the same as the
# DLC documentation's region table (docs/reference/region_availability.md).
VLLM_REGISTRY_ACCOUNTS = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-east-2": "975050140332",
    "ap-northeast-1": "763104351884",
    "ap-northeast-2": "763104351884",
    "ap-northeast-3": "364406365360",
    "ap-south-1": "763104351884",
    "ap-south-2": "772153158452",
    "ap-southeast-1": "763104351884",
    "ap-southeast-2": "763104351884",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ap-southeast-5": "550225433462",
    "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437",
    "ca-central-1": "763104351884",
    "ca-west-1": "204538143572",
    "eu-central-1": "763104351884",
    "eu-central-2": "380420809688",
    "eu-north-1": "763104351884",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "eu-west-1": "763104351884",
    "eu-west-2": "763104351884",
    "eu-west-3": "763104351884",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "mx-central-1": "637423239942",
    "sa-east-1": "763104351884",
    "us-east-1": "763104351884",
    "us-east-2": "763104351884",
    "us-west-1": "763104351884",
    "us-west-2": "763104351884",
}


@dataclasses.dataclass(frozen=True)
class ContainerImage:
    """A serving container's image, pinned, in the DLC registry of the stack's region."""

    name: str
    # What the stack's description calls it.
    label: str
    repository: str
    tag: str
    registry_accounts: dict[str, str]
    # The host AMI (ProductionVariant InferenceAmiVersion) the image needs, if not the default one.
    inference_ami_version: str | None = None

    @property
    def supported_regions(self) -> str:
        return ", ".join(sorted(self.registry_accounts))


IMAGES = {
    "tgi": ContainerImage("Tgi", "Hugging Face TGI", TGI_IMAGE_REPOSITORY, TGI_IMAGE_TAG, TGI_REGISTRY_ACCOUNTS),
    # A CUDA 13.0 image: the default host AMI's NVIDIA driver is too old for it, so its
    # deployments name an AMI (AWS DLC docs, vllm/deployment/sagemaker.md: "GPU deployments require
    # inference_ami_version", al2-ami-sagemaker-inference-gpu-3-1 on ml.g5.2xlarge: driver 550, and
    # the container's own CUDA compatibility libraries, the toolkit not mounting the host's).
    "vllm": ContainerImage("Vllm", "the AWS vLLM container", VLLM_IMAGE_REPOSITORY, VLLM_IMAGE_TAG,
                           VLLM_REGISTRY_ACCOUNTS, inference_ami_version="al2-ami-sagemaker-inference-gpu-3-1"),
}

# Lambda's longest timeout: the worker that runs asynchronous turns can be given no more.
LAMBDA_MAX_TIMEOUT_SECONDS = 900

VARIANT_NAME = "AllTraffic"
# Both containers download the weights from the Hugging Face Hub at start-up (about 13-16 GB for
# 7-8B) and load them onto the GPU (vLLM then captures its CUDA graphs), all within the start-up
# health check: minutes, where SageMaker's default allows far less. The download timeout covers
# weights given as model data (S3) instead.
STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS = 1200
MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS = 1200
# Host memory a copy of the model reserves on its instance (a g5.2xlarge has 32 GiB): both
# containers load the weights into GPU memory, so what they need on the host is modest.
INFERENCE_COMPONENT_MEMORY_MB = 8192

# Token limits recommended for each documented model on one A10G (24 GB, ml.g5.2xlarge), from the
# KV-cache arithmetic in docs/serving.md; Llama 2 keeps the chat service's defaults (its 4,096-token
# context). Context values override these.
MODEL_DEFAULTS = {
    "meta-llama/Llama-3.1-8B-Instruct": {"max_input_tokens": 7680, "max_total_tokens": 8192},
    "mistralai/Mistral-7B-Instruct-v0.3": {"max_input_tokens": 7680, "max_total_tokens": 8192},
}

# Defaults that depend on the stage (README, "Idle cost"): dev sits idle most of the day and its
# users can wait the minutes a wake-up takes, so its model scales to zero, and its worker may
# wait out a wake-up (chalicelib/waking.py: about 6 minutes) before it answers; prod (and any
# other stage) stays on, so no user is told the model is starting. Context values override these.
STAGE_DEFAULTS = {"dev": {"scale_to_zero": True, "worker_timeout_seconds": 600}}

# Context keys of earlier releases, and what took their place: an operator's old `-c` is refused
# before synth, not silently ignored.
REMOVED_CONTEXT = {
    "autoscaling_invocations_per_instance": (
        "autoscaling_concurrency_percent, the percent of generations_per_copy each copy is kept at "
        "(target tracking on concurrent requests, not invocations: docs/capacity.md)"
    ),
}

_ATTRIBUTE_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}
_STAGE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


@dataclasses.dataclass(frozen=True)
class ChatbotConfig:
    """The stack's settings; each field is a CDK context key of the same name."""

    stage: str = "dev"
    # The serving container (docs/serving.md): "tgi" (Hugging Face TGI) or "vllm" (the AWS vLLM DLC).
    serving: str = "tgi"
    # One of the documented models (chalicelib/token_bounds.py MODELS), by its Hugging Face id.
    model_id: str = DEFAULT_MODEL_ID
    instance_type: str = "ml.g5.2xlarge"
    instance_count: int = 1
    num_gpus: int = 1
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    max_total_tokens: int = DEFAULT_MAX_TOTAL_TOKENS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    hf_token_secret_name: str = "llama2-chatbot/hf-token"
    # How many generations one copy of the model (one instance) runs at once: 0 is the instance
    # type's default from its KV cache (infrastructure/capacity.py); other instance types need it.
    generations_per_copy: int = 0
    autoscaling: bool = False
    autoscaling_max_instances: int = 2
    # Target tracking on concurrent requests per copy (SageMaker's high-resolution concurrency
    # metric), as a percent of generations_per_copy: scale out before the copies are full.
    autoscaling_concurrency_percent: int = 75
    # Keeps the table, and the key it is encrypted with, when the stack is destroyed.
    retain_table: bool = True
    # The turns worker function's timeout: a streamed answer may take this long (not API
    # Gateway's 29 s). The queue's visibility timeout is derived from it.
    worker_timeout_seconds: int = 300
    # Whether anyone may create an account on the page; off, an administrator creates users.
    self_sign_up: bool = False
    # Cognito's Plus plan (threat protection), billed per monthly active user.
    cognito_plus_tier: bool = False
    retain_user_pool: bool = True
    # Idle cost (both serve the model through an inference component): scale to zero copies
    # after idle_minutes without a request, and/or a schedule (Application Auto Scaling cron
    # expressions, e.g. "0 8 ? * MON-FRI *", in schedule_timezone) switching it on and off.
    scale_to_zero: bool = False
    idle_minutes: int = 15
    schedule_timezone: str = "UTC"
    schedule_on_cron: str = ""
    schedule_off_cron: str = ""
    # Where alarms are e-mailed (the subscription must be confirmed); none: the topic only.
    alarm_email: str = ""
    # How long every log group of the stage keeps its logs (one of CloudWatch's values).
    log_retention_days: int = 30

    @classmethod
    def from_context(cls, node) -> "ChatbotConfig":
        """Reads each field from context, else the stage's default (`STAGE_DEFAULTS`) or the model's
        (`MODEL_DEFAULTS`), else the field's; `-c` values arrive as strings, cdk.json ones typed."""
        for key, replacement in REMOVED_CONTEXT.items():
            if node.try_get_context(key) is not None:
                raise ValueError(f"context {key} was removed: use {replacement}")
        stage = node.try_get_context("stage") or cls.stage
        model_id = node.try_get_context("model_id") or cls.model_id
        values = {**STAGE_DEFAULTS.get(stage, {}), **MODEL_DEFAULTS.get(model_id, {})}
        for field in dataclasses.fields(cls):
            raw = node.try_get_context(field.name)
            if raw is not None:
                values[field.name] = _parse(field.name, raw, type(field.default))
        return cls(**values)

    def __post_init__(self):
        if not _STAGE.fullmatch(self.stage):
            raise ValueError(f"context stage={self.stage!r}: use lowercase letters, digits and '-'")
        if self.serving not in IMAGES:
            raise ValueError(f"context serving={self.serving!r}: one of {', '.join(IMAGES)}")
        if self.model_id not in MODELS:
            raise ValueError(f"context model_id={self.model_id!r}: one of the documented models, {', '.join(MODELS)}")
        for name in ("instance_count", "num_gpus"):
            if getattr(self, name) < 1:
                raise ValueError(f"context {name}={getattr(self, name)}: must be at least 1")
        if not 1 <= self.worker_timeout_seconds <= LAMBDA_MAX_TIMEOUT_SECONDS:
            raise ValueError(
                f"context worker_timeout_seconds={self.worker_timeout_seconds}: "
                f"must be from 1 to {LAMBDA_MAX_TIMEOUT_SECONDS} (Lambda's limit)"
            )
        # A one-minute alarm can look back at most a day.
        if not 1 <= self.idle_minutes <= 1440:
            raise ValueError(f"context idle_minutes={self.idle_minutes}: must be from 1 to 1440")
        if bool(self.schedule_on_cron) != bool(self.schedule_off_cron):
            raise ValueError("context schedule_on_cron and schedule_off_cron go together")
        for name in ("schedule_on_cron", "schedule_off_cron"):
            cron = getattr(self, name)
            if cron and len(cron.split()) != 6:
                raise ValueError(
                    f"context {name}={cron!r}: six fields (minutes hours day-of-month month day-of-week year), "
                    "e.g. '0 8 ? * MON-FRI *'"
                )
        if self.alarm_email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", self.alarm_email):
            raise ValueError(f"context alarm_email={self.alarm_email!r}: not an e-mail address")
        if self.log_retention_days not in RETENTION_DAYS:
            raise ValueError(
                f"context log_retention_days={self.log_retention_days}: one of {', '.join(map(str, RETENTION_DAYS))}"
            )
        if self.autoscaling and self.autoscaling_max_instances < self.instance_count:
            raise ValueError("context autoscaling_max_instances must be at least instance_count")
        # The endpoint must accept what the chat service will send: check with its own rules.
        try:
            Settings.model_validate(
                {
                    "SAGEMAKER_ENDPOINT_NAME": stack_names.endpoint_name(self.stage),
                    "CHAT_TABLE_NAME": stack_names.table_name(self.stage),
                    **self.app_settings,
                }
            )
        except ValidationError as error:
            problems = "; ".join(problem["msg"] for problem in error.errors())
            raise ValueError(f"context token limits: {problems}") from None
        if self.generations_per_copy < 0:
            raise ValueError(
                f"context generations_per_copy={self.generations_per_copy}: must be at least 1 (0: the default)"
            )
        if self.generations < 1:
            raise ValueError(
                f"context generations_per_copy: no default for instance_type={self.instance_type} "
                f"(infrastructure/capacity.py knows {', '.join(capacity.A10G_INSTANCE_TYPES)}): set it"
            )
        if self.worker_concurrency > capacity.MAX_EVENT_SOURCE_CONCURRENCY:
            raise ValueError(
                f"{self.max_instances} instances of {self.generations} generations need {self.worker_concurrency} "
                f"workers; an SQS event source runs at most {capacity.MAX_EVENT_SOURCE_CONCURRENCY}"
            )
        if not 1 <= self.autoscaling_concurrency_percent <= 100:
            raise ValueError(
                f"context autoscaling_concurrency_percent={self.autoscaling_concurrency_percent}: must be from 1 to 100"
            )

    @property
    def schedule(self) -> tuple[str, str, str] | None:
        """(time zone, on cron, off cron) when a schedule is asked for."""
        if not self.schedule_on_cron:
            return None
        return self.schedule_timezone, self.schedule_on_cron, self.schedule_off_cron

    @property
    def serves_through_inference_component(self) -> bool:
        """Only an endpoint serving an inference component can have zero instances."""
        return self.scale_to_zero or self.schedule is not None

    @property
    def max_instances(self) -> int:
        return self.autoscaling_max_instances if self.autoscaling else self.instance_count

    @property
    def generations(self) -> int:
        """What one copy (one instance) generates at once: the setting, else the instance type's
        default for this model, container and token limits (0 when it has none)."""
        if self.generations_per_copy:
            return self.generations_per_copy
        return capacity.default_generations_per_copy(
            self.instance_type, self.model_id, self.max_new_tokens, self.serving
        ) or 0

    @property
    def worker_concurrency(self) -> int:
        """The turn worker's concurrency: what the endpoint generates at once at its most copies."""
        return capacity.worker_concurrency(self.max_instances, self.generations)

    @property
    def concurrency_target(self) -> float:
        """Concurrent requests a copy is kept at by target tracking."""
        return self.generations * self.autoscaling_concurrency_percent / 100

    @property
    def app_settings(self) -> dict[str, str | int]:
        """The chat service's settings that the stack decides, by environment variable name: the
        token limits (TGI reads the first two by the same names), the container and the model."""
        return {
            "MAX_INPUT_TOKENS": self.max_input_tokens,
            "MAX_TOTAL_TOKENS": self.max_total_tokens,
            "MAX_NEW_TOKENS": self.max_new_tokens,
            "SERVING": self.serving,
            "MODEL_ID": self.model_id,
        }

    @property
    def image(self) -> ContainerImage:
        return IMAGES[self.serving]

    @property
    def description(self) -> str:
        """The stack's description: the stage, and the model and container it deploys."""
        return (f"Chatbot ({self.stage}): {MODELS[self.model_id].display_name} in {self.image.label} on a SageMaker "
                "endpoint, chat history table, turns queue, user pool, monitoring")

    @property
    def container_environment(self) -> dict[str, str]:
        """The serving container's settings (the Hugging Face token aside), from the same limits
        the chat service budgets its prompts with.

        TGI: its launcher's variables. vLLM: each `SM_VLLM_<NAME>` is vLLM's `--<name>` (the AWS
        DLC's sagemaker_entrypoint.sh); --max-model-len is the whole context, prompt and answer (vLLM
        has no input limit of its own: the app keeps its prompts within MAX_INPUT_TOKENS), and a
        step of the batch may take that many tokens, so a whole prompt prefills at once, as TGI's
        default MAX_BATCH_PREFILL_TOKENS (its input limit and a margin) lets it.
        """
        if self.serving == "vllm":
            return {
                "SM_VLLM_MODEL": self.model_id,
                "SM_VLLM_TENSOR_PARALLEL_SIZE": str(self.num_gpus),
                "SM_VLLM_MAX_MODEL_LEN": str(self.max_total_tokens),
                "SM_VLLM_MAX_NUM_BATCHED_TOKENS": str(self.max_total_tokens),
            }
        return {
            "HF_MODEL_ID": self.model_id,
            "SM_NUM_GPUS": str(self.num_gpus),
            "MAX_INPUT_TOKENS": str(self.max_input_tokens),
            "MAX_TOTAL_TOKENS": str(self.max_total_tokens),
        }


def _parse(name: str, raw, kind: type):
    if type(raw) is kind:
        return raw
    text = str(raw).strip().lower()
    if kind is bool and text in ("true", "false"):
        return text == "true"
    if kind is int and re.fullmatch(r"-?\d+", text):
        return int(text)
    if kind is str:
        return str(raw)
    raise ValueError(f"context {name}={raw!r}: expected {kind.__name__}")


class ChatbotStack(cdk.Stack):
    """One stage: endpoint `llama2-chatbot-<stage>`, table `llama2-chatbot-<stage>-chat`, the
    topic and queue `llama2-chatbot-<stage>-turns`, and user pool `llama2-chatbot-<stage>`."""

    def __init__(self, scope: Construct, construct_id: str, *, config: ChatbotConfig, **kwargs):
        super().__init__(scope, construct_id, **kwargs)
        cdk.Tags.of(self).add("project", stack_names.APP_NAME)
        cdk.Tags.of(self).add("stage", config.stage)

        table = self._chat_table(config)
        registry = self._image_registry_account(config.image)
        endpoint, component = self._endpoint(config, registry, self._execution_role(config, registry))
        log_groups = LogGroups(
            self,
            "LogGroups",
            stage=config.stage,
            retention_days=config.log_retention_days,
            inference_component=config.serves_through_inference_component,
        )
        # SageMaker would otherwise make the model's log groups, without the retention, first.
        for resource in (endpoint, component):
            if resource:
                resource.node.add_dependency(log_groups)
        if component:
            CopyScaling(
                self,
                "CopyScaling",
                prefix=stack_names.inference_component_name(config.stage),
                component=component,
                min_copies=config.instance_count,
                max_copies=config.max_instances,
                concurrency_per_copy=config.concurrency_target if config.autoscaling else None,
                idle_minutes=config.idle_minutes if config.scale_to_zero else None,
                schedule=config.schedule,
            )
        elif config.autoscaling:
            self._autoscaling(config, endpoint)
        turns = TurnsQueue(
            self, "Turns", stage=config.stage, worker_timeout=cdk.Duration.seconds(config.worker_timeout_seconds)
        )
        users = UserPool(
            self,
            "Users",
            stage=config.stage,
            self_sign_up=config.self_sign_up,
            plus_tier=config.cognito_plus_tier,
            retain=config.retain_user_pool,
        )

        monitoring = Monitoring(
            self,
            "Monitoring",
            stage=config.stage,
            key=turns.key,
            dead_letter_queue=turns.dead_letter_queue,
            alarm_email=config.alarm_email,
        )

        outputs = {
            stack_names.ENVIRONMENT_OUTPUTS["SAGEMAKER_ENDPOINT_NAME"]: endpoint.attr_endpoint_name,
            stack_names.ENDPOINT_ARN_OUTPUT: endpoint.attr_endpoint_arn,
            stack_names.ENVIRONMENT_OUTPUTS["CHAT_TABLE_NAME"]: table.table_name,
            stack_names.TABLE_ARN_OUTPUT: table.table_arn,
            stack_names.TABLE_KEY_ARN_OUTPUT: table.encryption_key.key_arn,
            **{
                stack_names.ENVIRONMENT_OUTPUTS[name]: str(value)
                for name, value in config.app_settings.items()
            },
            stack_names.ENVIRONMENT_OUTPUTS["TURNS_TOPIC_ARN"]: turns.topic.topic_arn,
            stack_names.ENVIRONMENT_OUTPUTS["TURNS_QUEUE_NAME"]: turns.queue.queue_name,
            stack_names.TURNS_QUEUE_ARN_OUTPUT: turns.queue.queue_arn,
            stack_names.TURNS_DEAD_LETTER_QUEUE_NAME_OUTPUT: turns.dead_letter_queue.queue_name,
            stack_names.TURNS_DEAD_LETTER_QUEUE_ARN_OUTPUT: turns.dead_letter_queue.queue_arn,
            stack_names.WORKER_TIMEOUT_OUTPUT: str(config.worker_timeout_seconds),
            stack_names.WORKER_CONCURRENCY_OUTPUT: str(config.worker_concurrency),
            stack_names.ENVIRONMENT_OUTPUTS["USER_POOL_ID"]: users.pool.user_pool_id,
            stack_names.ENVIRONMENT_OUTPUTS["USER_POOL_ARN"]: users.pool.user_pool_arn,
            stack_names.ENVIRONMENT_OUTPUTS["USER_POOL_CLIENT_ID"]: users.client.user_pool_client_id,
            stack_names.ALARM_TOPIC_ARN_OUTPUT: monitoring.topic.topic_arn,
            stack_names.DASHBOARD_NAME_OUTPUT: monitoring.dashboard.dashboard_name,
        }
        if component:
            outputs[stack_names.OPTIONAL_ENVIRONMENT_OUTPUTS["SAGEMAKER_INFERENCE_COMPONENT_NAME"]] = (
                component.inference_component_name
            )
        for key, value in outputs.items():
            cdk.CfnOutput(self, key, value=value)

    def _chat_table(self, config: ChatbotConfig) -> dynamodb.Table:
        def key(name: str) -> dynamodb.Attribute:
            return dynamodb.Attribute(name=name, type=_ATTRIBUTE_TYPES[chat_table.KEY_TYPES[name]])

        removal_policy = cdk.RemovalPolicy.RETAIN if config.retain_table else cdk.RemovalPolicy.DESTROY
        # Conversations under a key of the stage's own, whose every use CloudTrail records and
        # which the functions' policies grant only through DynamoDB, for this table
        # (`function_policies.table_key`). A kept table keeps its key: without it the table, and
        # its backups, could never be read again. A deleted table's point-in-time backup stays
        # restorable for 35 days; the key's 30-day waiting period (the longest) covers most of it.
        encryption_key = kms.Key(
            self,
            "ChatTableKey",
            description=f"Encrypts the {config.stage} chatbot's conversations (DynamoDB)",
            enable_key_rotation=True,
            removal_policy=removal_policy,
            pending_window=cdk.Duration.days(30),
        )
        table = dynamodb.Table(
            self,
            "ChatTable",
            table_name=stack_names.table_name(config.stage),
            partition_key=key(chat_table.PARTITION_KEY),
            sort_key=key(chat_table.SORT_KEY),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=chat_table.TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=encryption_key,
            removal_policy=removal_policy,
        )
        index = chat_table.sessions_index()
        table.add_global_secondary_index(
            index_name=index["IndexName"],
            partition_key=key(chat_table.OWNER_ATTRIBUTE),
            sort_key=key(chat_table.ACTIVITY_ATTRIBUTE),
            projection_type=dynamodb.ProjectionType.INCLUDE,
            non_key_attributes=index["Projection"]["NonKeyAttributes"],
        )
        return table

    def _image_registry_account(self, image: ContainerImage) -> str:
        """The DLC registry account for the stack's region. An environment-agnostic stack (the
        default) looks it up at deploy time, and a template rule rejects unmapped regions."""
        accounts = image.registry_accounts
        if not cdk.Token.is_unresolved(self.region):
            if self.region not in accounts:
                raise ValueError(
                    f"no {image.repository} image registry known for region {self.region}; "
                    f"supported: {image.supported_regions}"
                )
            return accounts[self.region]
        cdk.CfnRule(
            self,
            "SupportedRegion",
            assertions=[
                cdk.CfnRuleAssertion(
                    assert_=cdk.Fn.condition_contains(sorted(accounts), cdk.Aws.REGION),
                    assert_description=(
                        f"No {image.repository} image registry is known for this region. "
                        f"Supported regions: {image.supported_regions}"
                    ),
                )
            ],
        )
        mapping = cdk.CfnMapping(
            self,
            f"{image.name}ImageRegistry",
            mapping={region: {"account": account} for region, account in accounts.items()},
        )
        return mapping.find_in_map(cdk.Aws.REGION, "account")

    def _execution_role(self, config: ChatbotConfig, registry: str) -> iam.Role:
        """What the serving container needs: pull its image and write its logs. The Hugging Face
        token reaches it already resolved by CloudFormation, so it never calls Secrets Manager."""
        log_group_arn = self.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"/aws/sagemaker/Endpoints/{stack_names.endpoint_name(config.stage)}",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        statements = [
            iam.PolicyStatement(
                sid="PullModelImage",
                actions=["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                resources=[
                    self.format_arn(
                        service="ecr", account=registry, resource="repository", resource_name=config.image.repository
                    )
                ],
            ),
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(
                sid="EndpointLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
                resources=[log_group_arn, f"{log_group_arn}:log-stream:*"],
            ),
        ]
        role = iam.Role(
            self,
            "ModelExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"SageMaker runs the {config.stage} model container ({config.serving}) with this role",
            # Inline, so the permissions exist before SageMaker checks them at CreateModel.
            inline_policies={"ModelContainer": iam.PolicyDocument(statements=statements)},
        )
        cdk.Validations.of(role).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken has no resource-level permissions: IAM accepts only '*'.",
            ),
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{self._nag_form(log_group_arn)}:log-stream:*]",
                reason="SageMaker names the log streams per instance at run time; the grant is limited "
                "to this endpoint's own log group.",
            ),
        )
        return role

    def _endpoint(
        self, config: ChatbotConfig, registry: str, role: iam.Role
    ) -> tuple[sagemaker.CfnEndpoint, sagemaker.CfnInferenceComponent | None]:
        """The endpoint, and the inference component that serves the model when the
        endpoint must be able to scale to zero instances."""
        hf_token = cdk.SecretValue.secrets_manager(config.hf_token_secret_name)
        model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=f"{registry}.dkr.ecr.{self.region}.{self.url_suffix}/{config.image.repository}:{config.image.tag}",
                environment={
                    **config.container_environment,
                    # A `{{resolve:secretsmanager:...}}` reference: CloudFormation resolves it at
                    # deploy time; the template and cdk.out never hold the token.
                    "HF_TOKEN": hf_token.unsafe_unwrap(),
                },
            ),
        )
        if config.serves_through_inference_component:
            # The model is not on the variant but in an inference component placed on it; the
            # variant's instances come and go with the component's copies (down to none).
            variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=VARIANT_NAME,
                instance_type=config.instance_type,
                initial_instance_count=config.instance_count,
                managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                    status="ENABLED", min_instance_count=0, max_instance_count=config.max_instances
                ),
                routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                    routing_strategy="LEAST_OUTSTANDING_REQUESTS"
                ),
                inference_ami_version=config.image.inference_ami_version,
            )
        else:
            variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=VARIANT_NAME,
                model_name=model.attr_model_name,
                instance_type=config.instance_type,
                initial_instance_count=config.instance_count,
                initial_variant_weight=1,
                container_startup_health_check_timeout_in_seconds=STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS,
                model_data_download_timeout_in_seconds=MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS,
                inference_ami_version=config.image.inference_ami_version,
            )
        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            production_variants=[variant],
            # An endpoint of inference components starts their containers with this role.
            execution_role_arn=role.role_arn if config.serves_through_inference_component else None,
        )
        # No KmsKeyId: g5 (and most GPU) instances have NVMe instance storage, encrypted by the
        # instance's hardware, and SageMaker rejects a KMS key for them.
        endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=stack_names.endpoint_name(config.stage),
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
        )
        if not config.serves_through_inference_component:
            return endpoint, None
        component = sagemaker.CfnInferenceComponent(
            self,
            "InferenceComponent",
            inference_component_name=stack_names.inference_component_name(config.stage),
            endpoint_name=endpoint.attr_endpoint_name,
            variant_name=VARIANT_NAME,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                model_name=model.attr_model_name,
                compute_resource_requirements=sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
                    number_of_accelerator_devices_required=config.num_gpus,
                    min_memory_required_in_mb=INFERENCE_COMPONENT_MEMORY_MB,
                ),
                startup_parameters=sagemaker.CfnInferenceComponent.InferenceComponentStartupParametersProperty(
                    container_startup_health_check_timeout_in_seconds=STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS,
                    model_data_download_timeout_in_seconds=MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS,
                ),
            ),
            # One copy takes every GPU of an instance: copies and instances are counted alike.
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                copy_count=config.instance_count
            ),
        )
        return endpoint, component

    def _autoscaling(self, config: ChatbotConfig, endpoint: sagemaker.CfnEndpoint) -> None:
        """Target tracking on the concurrent requests each instance's model serves, in flight or
        queued in TGI: a generation holds a copy for seconds, so requests a minute track its load
        poorly (docs/capacity.md); this metric does, and comes every 10 s instead of every minute.
        L1 constructs: without a RoleARN, Application Auto Scaling uses its SageMaker
        service-linked role, where the L2 would add a role of its own that the service ignores."""
        target = CfnScalableTarget(
            self,
            "EndpointScaling",
            service_namespace="sagemaker",
            resource_id=f"endpoint/{endpoint.attr_endpoint_name}/variant/{VARIANT_NAME}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=config.instance_count,
            max_capacity=config.autoscaling_max_instances,
        )
        CfnScalingPolicy(
            self,
            "ConcurrentRequestsPerModel",
            policy_name=f"{stack_names.endpoint_name(config.stage)}-concurrent-requests-per-model",
            policy_type="TargetTrackingScaling",
            scaling_target_id=target.ref,
            target_tracking_scaling_policy_configuration=CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                predefined_metric_specification=CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                    predefined_metric_type="SageMakerVariantConcurrentRequestsPerModelHighResolution"
                ),
                target_value=config.concurrency_target,
            ),
        )

    def _nag_form(self, value: str) -> str:
        """How cdk-nag spells a value in a finding id: pseudo parameters as `<AWS::Region>`."""
        resolved = self.resolve(value)
        if isinstance(resolved, str):
            return resolved
        return "".join(part if isinstance(part, str) else f"<{part['Ref']}>" for part in resolved["Fn::Join"][1])
