"""moto's server as the AWS account the deploy cycle deploys to, with what this project's deploy
needs and moto 5.2.5 lacks filled in before it serves:

    python -c "from tests.deploy.moto_aws import main; main()" --port 5000   (`command(port)`)

The gaps, each met here (and only here):

1. CloudFormation skips a resource type it has no model for and still reports the stack
   complete. Here such a type fails the stack instead (`UNMODELLED_TYPES_ALLOWED` lists the only
   exceptions), and models are registered for the types the stack and `cdk bootstrap` use that
   moto lacks: AWS::Cognito::UserPool and ::UserPoolClient, AWS::SNS::Subscription and
   ::TopicPolicy, AWS::SQS::QueuePolicy, AWS::CloudWatch::Alarm,
   AWS::ApplicationAutoScaling::ScalableTarget and ::ScalingPolicy, and
   AWS::SageMaker::InferenceComponent. Each creates (and deletes) the resource in moto's own
   backend of that service, so the service's API shows what the stack made.
2. CloudFormation reads a TemplateURL on 127.0.0.1 as bucket "127" (it expects `localhost`):
   the CDK CLI, pointed at this server, gives such URLs.
3. SageMaker: its list of instance types lacks the g5 family; a production variant without
   ModelName (an endpoint serving inference components) raises KeyError; and it has no
   inference component API at all. Here any `ml.` type passes, such a variant is accepted, and
   Create/Describe/List/DeleteInferenceComponent are served (the component is InService at once).
4. Application Auto Scaling rejects the dimension `sagemaker:inference-component:DesiredCopyCount`.
5. API Gateway v2 has no CreateDeployment, which `chalice deploy` calls for the WebSocket API.
6. CloudFormation's ExecuteChangeSet (how the CDK CLI deploys) leaves the stack's outputs as
   they were before it, none for a new stack. And when a resource fails, it answers 500 and
   leaves the stack in progress; the client retries and moto then reports the stack complete
   with resources missing. Here the outputs are the template's, and a failure is what AWS
   makes of it: ExecuteChangeSet succeeds, the stack ends ROLLBACK_COMPLETE
   (UPDATE_ROLLBACK_COMPLETE for an update) with the reason in its events. (There is no real
   rollback: what was created before the failure stays.)
7. KMS: a key created by CloudFormation with Tags fails (its model hands CloudFormation's
   Key/Value tags to CreateKey, which wants TagKey/TagValue).
8. SageMaker: an endpoint created by CloudFormation ignores its EndpointName (it gets a
   generated one) and has no EndpointArn attribute.
9. API Gateway: ImportRestApi and PutRestApi take only OpenAPI 3 (and ImportRestApi fails on a
   document without info.description); Chalice sends Swagger 2.0. Here a Swagger 2.0 document
   makes the API's Cognito authorizers, resources and methods (each with its authorizer and
   Lambda proxy integration), so the API's own calls show what Chalice deployed.

What stays out of reach: nothing runs a Lambda function or serves a deployed API (moto would
need Docker, and it has no WebSocket gateway); the cycle test runs the deployed stage's
configuration on make run's local servers instead (tests/deploy/test_cycle.py).
"""

import json
import sys
import traceback
import uuid
from typing import Any
from urllib.parse import unquote, urlparse

from moto.apigateway import models as apigateway_models
from moto.apigatewayv2 import urls as apigatewayv2_urls
from moto.apigatewayv2.models import apigatewayv2_backends
from moto.apigatewayv2.responses import ApiGatewayV2Response
from moto.applicationautoscaling import models as autoscaling_models
from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.cloudformation import models as cloudformation_models
from moto.cloudformation import parsing
from moto.cloudformation import responses as cloudformation_responses
from moto.cloudformation import utils as cloudformation_utils
from moto.cloudwatch.models import Dimension, Metric, MetricDataQuery, MetricStat, cloudwatch_backends
from moto.cognitoidp.models import cognitoidp_backends
from moto.core.common_models import CloudFormationModel
from moto.core.responses import ActionResult, EmptyResult
from moto.kms import models as kms_models
from moto.sagemaker import models as sagemaker_models
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.responses import SageMakerResponse
from moto.sns.models import sns_backends
from moto.sqs.models import sqs_backends

# Resource types a stack may hold that are skipped: nothing to create, or (the CDK bootstrap
# bucket's policy, which denies requests without TLS) one that moto would enforce against this
# plain-HTTP endpoint.
UNMODELLED_TYPES_ALLOWED = {"AWS::CDK::Metadata", "AWS::S3::BucketPolicy", *parsing.NULL_MODELS}


# --- 1. CloudFormation: unknown types fail; the missing models ----------------------------------

def resource_class_from_type(resource_type: str):
    if resource_type in UNMODELLED_TYPES_ALLOWED:
        return None
    if resource_type.startswith("Custom::"):
        return parsing.CustomModel
    model = parsing.get_model_map().get(resource_type)
    if model is None:
        raise parsing.ValidationError(message=f"the test's AWS (moto) has no model of {resource_type}: "
                                      "add one to tests/deploy/moto_aws.py")
    return model


class _Resource:
    """What every model below shares: a physical id, Ref to it, and the attributes in
    `attributes`. (Each also subclasses CloudFormationModel directly: moto finds its models
    among that class's direct subclasses.)"""

    attributes: dict[str, Any] = {}

    def __init__(self, physical_id: str, attributes: dict[str, Any] | None = None, **state):
        self.physical_id = physical_id
        self.attributes = attributes or {}
        self.state = state

    @property
    def physical_resource_id(self) -> str:
        return self.physical_id

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return True

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        return self.attributes[attribute_name]

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def update_from_cloudformation_json(cls, original_resource, new_resource_name, cloudformation_json,
                                        account_id, region_name):
        original_resource.delete(account_id, region_name)
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)


class UserPool(_Resource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Cognito::UserPool"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        properties = dict(cloudformation_json["Properties"])
        name = properties.pop("UserPoolName", resource_name)
        pool = cognitoidp_backends[account_id][region_name].create_user_pool(name, properties)
        return cls(pool.id, {"Arn": pool.arn, "UserPoolId": pool.id, "ProviderName": f"cognito-idp.{region_name}"
                             f".amazonaws.com/{pool.id}", "ProviderURL": f"https://cognito-idp.{region_name}"
                             f".amazonaws.com/{pool.id}"})

    def delete(self, account_id, region_name):
        cognitoidp_backends[account_id][region_name].delete_user_pool(self.physical_id)


class UserPoolClient(_Resource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Cognito::UserPoolClient"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        properties = dict(cloudformation_json["Properties"])
        pool_id = properties.pop("UserPoolId")
        generate_secret = str(properties.pop("GenerateSecret", False)).lower() == "true"
        client = cognitoidp_backends[account_id][region_name].create_user_pool_client(
            pool_id, generate_secret, properties)
        return cls(client.id, {"ClientId": client.id, "Name": properties.get("ClientName")}, pool_id=pool_id)

    def delete(self, account_id, region_name):
        cognitoidp_backends[account_id][region_name].delete_user_pool_client(self.state["pool_id"], self.physical_id)


class Subscription(_Resource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::Subscription"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        properties = cloudformation_json["Properties"]
        sns = sns_backends[account_id][region_name]
        subscription = sns.subscribe(properties["TopicArn"], properties["Endpoint"], properties["Protocol"])
        for name in ("RawMessageDelivery", "FilterPolicy", "RedrivePolicy", "DeliveryPolicy"):
            if name in properties:
                value = properties[name]
                value = json.dumps(value) if isinstance(value, dict) else str(value).lower()
                sns.set_subscription_attributes(subscription.arn, name, value)
        return cls(subscription.arn)

    def delete(self, account_id, region_name):
        sns_backends[account_id][region_name].unsubscribe(self.physical_id)


class TopicPolicy(_Resource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::TopicPolicy"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        properties = cloudformation_json["Properties"]
        for topic in properties["Topics"]:
            sns_backends[account_id][region_name].set_topic_attribute(
                topic, "Policy", json.dumps(properties["PolicyDocument"]))
        return cls(resource_name, topics=properties["Topics"])

    def delete(self, account_id, region_name):
        for topic in self.state["topics"]:
            try:
                sns_backends[account_id][region_name].set_topic_attribute(topic, "Policy", "")
            except Exception:
                pass  # the topic went first


class QueuePolicy(_Resource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SQS::QueuePolicy"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        properties = cloudformation_json["Properties"]
        names = [url.rstrip("/").rsplit("/", 1)[-1] for url in properties["Queues"]]
        for name in names:
            sqs_backends[account_id][region_name].set_queue_attributes(
                name, {"Policy": json.dumps(properties["PolicyDocument"])})
        return cls(resource_name, queues=names)

    def delete(self, account_id, region_name):
        for name in self.state["queues"]:
            try:
                sqs_backends[account_id][region_name].set_queue_attributes(name, {"Policy": ""})
            except Exception:
                pass  # the queue went first


def _metric_data_queries(metrics: list[dict]) -> list[MetricDataQuery] | None:
    """The alarm's Metrics as moto's PutMetricAlarm builds them (moto/cloudwatch/responses.py)."""
    queries = []
    for query in metrics:
        stat = query.get("MetricStat")
        metric_stat = None
        if stat:
            metric = stat["Metric"]
            dimensions = [Dimension(name=d["Name"], value=d["Value"]) for d in metric.get("Dimensions", [])]
            metric_stat = MetricStat(metric=Metric(metric_name=metric["MetricName"], namespace=metric["Namespace"],
                                                   dimensions=dimensions),
                                     period=stat.get("Period"), stat=stat.get("Stat"), unit=stat.get("Unit"))
        queries.append(MetricDataQuery(query_id=query.get("Id"), label=query.get("Label"), period=query.get("Period"),
                                       return_data=query.get("ReturnData"), expression=query.get("Expression"),
                                       metric_stat=metric_stat))
    return queries or None


class Alarm(_Resource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        p = cloudformation_json["Properties"]
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=resource_name, namespace=p.get("Namespace"), metric_name=p.get("MetricName"),
            comparison_operator=p["ComparisonOperator"], evaluation_periods=int(p["EvaluationPeriods"]),
            period=p.get("Period"), threshold=float(p["Threshold"]) if "Threshold" in p else None,
            statistic=p.get("Statistic"), description=p.get("AlarmDescription"),
            dimensions=p.get("Dimensions", []),
            alarm_actions=p.get("AlarmActions", []), metric_data_queries=_metric_data_queries(p.get("Metrics", [])),
            datapoints_to_alarm=p.get("DatapointsToAlarm"), extended_statistic=p.get("ExtendedStatistic"),
            ok_actions=p.get("OKActions", []), insufficient_data_actions=p.get("InsufficientDataActions", []),
            unit=p.get("Unit"), treat_missing_data=p.get("TreatMissingData"), tags=p.get("Tags", []))
        return cls(resource_name, {"Arn": alarm.alarm_arn})

    def delete(self, account_id, region_name):
        cloudwatch_backends[account_id][region_name].delete_alarms([self.physical_id])


class ScalableTarget(_Resource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::ApplicationAutoScaling::ScalableTarget"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        p = cloudformation_json["Properties"]
        key = (p["ServiceNamespace"], p["ResourceId"], p["ScalableDimension"])
        applicationautoscaling_backends[account_id][region_name].register_scalable_target(
            *key, min_capacity=int(p["MinCapacity"]), max_capacity=int(p["MaxCapacity"]),
            role_arn=p.get("RoleARN"), suspended_state=p.get("SuspendedState"))
        # CloudFormation's own form of the target's id: resource|dimension|namespace.
        return cls(f"{key[1]}|{key[2]}|{key[0]}", key=key)

    def delete(self, account_id, region_name):
        applicationautoscaling_backends[account_id][region_name].deregister_scalable_target(*self.state["key"])


class ScalingPolicy(_Resource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::ApplicationAutoScaling::ScalingPolicy"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        p = cloudformation_json["Properties"]
        if "ScalingTargetId" in p:
            resource_id, dimension, namespace = p["ScalingTargetId"].split("|")
        else:
            resource_id, dimension, namespace = p["ResourceId"], p["ScalableDimension"], p["ServiceNamespace"]
        key = (p["PolicyName"], namespace, resource_id, dimension)
        policy = applicationautoscaling_backends[account_id][region_name].put_scaling_policy(
            *key, policy_body=p.get("StepScalingPolicyConfiguration") or p.get(
                "TargetTrackingScalingPolicyConfiguration"), policy_type=p["PolicyType"])
        return cls(policy.policy_arn, {"Arn": policy.policy_arn}, key=key)

    def delete(self, account_id, region_name):
        applicationautoscaling_backends[account_id][region_name].delete_scaling_policy(*self.state["key"])


class InferenceComponent(_Resource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SageMaker::InferenceComponent"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "InferenceComponentName"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        p = cloudformation_json["Properties"]
        component = create_inference_component(
            sagemaker_models.sagemaker_backends[account_id][region_name], resource_name, p["EndpointName"],
            p.get("VariantName"), p["Specification"], p.get("RuntimeConfig", {}))
        return cls(component["InferenceComponentArn"], {
            "InferenceComponentName": resource_name, "InferenceComponentArn": component["InferenceComponentArn"]},
            name=resource_name)

    def delete(self, account_id, region_name):
        inference_components(sagemaker_models.sagemaker_backends[account_id][region_name]).pop(
            self.state["name"], None)


# --- 2. TemplateURL on 127.0.0.1 ------------------------------------------------------------------

def get_stack_from_s3_url(template_url: str, account_id: str, partition: str) -> str:
    if urlparse(template_url).hostname == "127.0.0.1":
        template_url = template_url.replace("127.0.0.1", "localhost", 1)
    return cloudformation_utils.get_stack_from_s3_url(template_url, account_id, partition)


# --- 3. SageMaker: g5, variants of inference components, the inference component API --------------

def validate_instance_type(self, instance_type: str) -> None:
    if not instance_type.startswith("ml."):
        raise ValidationError(message=f"Value '{instance_type}' at 'instanceType' is not an ml. instance type")


def validate_production_variants(self, production_variants: list[dict]) -> None:
    """A variant names a model unless inference components serve it; a named model must exist."""
    for variant in production_variants:
        if "ModelName" in variant and variant["ModelName"] not in self._models:
            raise ValidationError(message=f"Could not find model '{variant['ModelName']}'.")


def inference_components(backend) -> dict[str, dict]:
    if not hasattr(backend, "inference_components"):
        backend.inference_components = {}
    return backend.inference_components


def create_inference_component(backend, name, endpoint_name, variant_name, specification, runtime_config) -> dict:
    endpoint = backend.describe_endpoint(endpoint_name)
    if specification.get("ModelName") not in backend._models:
        raise ValidationError(message=f"Could not find model '{specification.get('ModelName')}'.")
    components = inference_components(backend)
    if name in components:
        raise ValidationError(message=f"Cannot create already existing inference component {name}.")
    now = sagemaker_models.utcnow()
    copies = int(runtime_config.get("CopyCount", 1))
    components[name] = {
        "InferenceComponentName": name,
        "InferenceComponentArn": sagemaker_models.arn_formatter(
            "inference-component", name, backend.account_id, backend.region_name),
        "EndpointName": endpoint_name, "EndpointArn": endpoint["EndpointArn"], "VariantName": variant_name,
        "Specification": specification, "RuntimeConfig": {"DesiredCopyCount": copies, "CurrentCopyCount": copies},
        "InferenceComponentStatus": "InService", "CreationTime": now, "LastModifiedTime": now,
    }
    return components[name]


def _component(backend, name: str) -> dict:
    try:
        return inference_components(backend)[name]
    except KeyError:
        raise ValidationError(message=f"Could not find inference component '{name}'.") from None


def create_inference_component_action(self):
    component = create_inference_component(
        self.sagemaker_backend, self._get_param("InferenceComponentName"), self._get_param("EndpointName"),
        self._get_param("VariantName"), self._get_param("Specification"), self._get_param("RuntimeConfig", {}))
    return ActionResult({"InferenceComponentArn": component["InferenceComponentArn"]})


def describe_inference_component_action(self):
    return ActionResult(_component(self.sagemaker_backend, self._get_param("InferenceComponentName")))


def delete_inference_component_action(self):
    name = self._get_param("InferenceComponentName")
    _component(self.sagemaker_backend, name)
    inference_components(self.sagemaker_backend).pop(name)
    return EmptyResult()


def list_inference_components_action(self):
    endpoint = self._get_param("EndpointNameEquals")
    summaries = [{key: component[key] for key in (
        "InferenceComponentName", "InferenceComponentArn", "EndpointName", "EndpointArn", "VariantName",
        "InferenceComponentStatus", "CreationTime", "LastModifiedTime")}
        for component in inference_components(self.sagemaker_backend).values()
        if endpoint is None or component["EndpointName"] == endpoint]
    return ActionResult({"InferenceComponents": summaries})


# --- 4. Application Auto Scaling: inference components' copy count -----------------------------

COPY_COUNT_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
_target_params_are_valid = autoscaling_models._target_params_are_valid


def target_params_are_valid(namespace: str, r_id: str, dimension: str) -> bool:
    if dimension == COPY_COUNT_DIMENSION and namespace == "sagemaker" and r_id.startswith("inference-component/"):
        return True
    return _target_params_are_valid(namespace, r_id, dimension)


# --- 5. API Gateway v2: CreateDeployment ----------------------------------------------------------

def deployments(self):
    """POST (CreateDeployment) and GET (GetDeployments) of /v2/apis/<id>/deployments: a deployment
    is an id and, given a stage, that stage's deploymentId."""
    api_id = unquote(self.path.split("/")[-2])
    api = apigatewayv2_backends[self.current_account][self.region].get_api(api_id)
    if not hasattr(api, "deployments"):
        api.deployments = []
    if self.method == "GET":
        return 200, {}, json.dumps({"items": api.deployments})
    config = json.loads(self.body or "{}")
    deployment = {"deploymentId": uuid.uuid4().hex[:6], "deploymentStatus": "DEPLOYED",
                  "description": config.get("description", "")}
    api.deployments.append(deployment)
    if config.get("stageName"):
        api.get_stage(config["stageName"]).deployment_id = deployment["deploymentId"]
    return 201, {}, json.dumps(deployment)


def deployments_dispatch(request, full_url, headers):
    response = ApiGatewayV2Response()
    response.setup_class(request, full_url, headers)
    return deployments(response)


# --- 6. A change set that fails ----------------------------------------------------------------

_execute_change_set = cloudformation_models.CloudFormationBackend.execute_change_set


def execute_change_set(self, change_set_name: str, stack_name: str | None = None) -> None:
    try:
        _execute_change_set(self, change_set_name, stack_name)
    except Exception as error:
        traceback.print_exc()  # into the server's log, which the cycle test keeps
        change_set = next((cs for cs in self.change_sets.values()
                           if change_set_name in (cs.change_set_id, cs.change_set_name)), None)
        if change_set is None:
            raise
        stack = self.stacks[change_set.stack_id]
        failed = "CREATE_FAILED" if change_set.change_set_type == "CREATE" else "UPDATE_FAILED"
        stack._add_stack_event(failed, resource_status_reason=f"{type(error).__name__}: {error}")
        stack.status = "ROLLBACK_COMPLETE" if change_set.change_set_type == "CREATE" else "UPDATE_ROLLBACK_COMPLETE"
        stack._add_stack_event(stack.status)
        change_set.execution_status = "EXECUTE_FAILED"
        return
    stack = next(stack for stack in self.stacks.values() if stack.stack_id in (
        cs.stack_id for cs in self.change_sets.values() if change_set_name in (cs.change_set_id, cs.change_set_name)))
    stack._parse_template()
    stack.output_map = stack._create_output_map()


# --- 7. KMS keys with tags ----------------------------------------------------------------------

_create_key = kms_models.Key.create_from_cloudformation_json.__func__


def create_key_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    properties = cloudformation_json["Properties"]
    properties["Tags"] = [{"TagKey": tag["Key"], "TagValue": tag["Value"]} for tag in properties.get("Tags", [])]
    return _create_key(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)


# --- 8. The endpoint's name and ARN ------------------------------------------------------------

_endpoint_attribute = sagemaker_models.FakeEndpoint.get_cfn_attribute


def endpoint_attribute(self, attribute_name: str):
    return self.arn if attribute_name == "EndpointArn" else _endpoint_attribute(self, attribute_name)


# --- 9. Swagger 2.0 REST APIs ---------------------------------------------------------------------

_import_rest_api = apigateway_models.APIGatewayBackend.import_rest_api
_put_rest_api = apigateway_models.APIGatewayBackend.put_rest_api
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def import_rest_api(self, api_doc: dict, fail_on_warnings: bool):
    if "swagger" not in api_doc:
        return _import_rest_api(self, api_doc, fail_on_warnings)
    api = self.create_rest_api(name=api_doc["info"]["title"], description=api_doc["info"].get("description", ""))
    return put_rest_api(self, api.id, api_doc, fail_on_warnings, mode="overwrite")


def put_rest_api(self, function_id: str, api_doc: dict, fail_on_warnings: bool, mode: str = "merge"):
    """A Swagger 2.0 document as API Gateway imports it, so far as the test reads it back: its
    Cognito authorizers, and each path's methods with their authorizer and Lambda integration."""
    if "swagger" not in api_doc:
        return _put_rest_api(self, function_id, api_doc, fail_on_warnings, mode)
    api = self.get_rest_api(function_id)
    api.resources = {}
    api.authorizers = {}
    api.default = api.add_child("/")
    authorizers = {}
    for name, definition in api_doc.get("securityDefinitions", {}).items():
        spec = definition.get("x-amazon-apigateway-authorizer", {})
        authorizers[name] = self.create_authorizer(
            function_id, name, spec.get("type", "").upper(), provider_arns=spec.get("providerARNs"),
            authorizer_uri=spec.get("authorizerUri"), identity_source=definition.get("name")).id
    resources = {"/": api.default}
    for path, operations in sorted(api_doc["paths"].items()):
        parent = api.default
        parts = [part for part in path.split("/") if part]
        for depth, part in enumerate(parts, 1):
            key = "/" + "/".join(parts[:depth])
            if key not in resources:
                resources[key] = self.create_resource(function_id, parent.id, part)
            parent = resources[key]
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            security = [name for requirement in operation.get("security", []) for name in requirement]
            authorizer = authorizers.get(security[0]) if security else None
            self.put_method(function_id, parent.id, method.upper(),
                            "COGNITO_USER_POOLS" if authorizer else "NONE", authorizer_id=authorizer)
            integration = operation.get("x-amazon-apigateway-integration")
            if integration:
                self.put_integration(function_id, parent.id, method.upper(), integration["type"].upper(),
                                     integration.get("uri"), integration.get("httpMethod"))
    return api


def install() -> None:
    """Every patch above, before the server serves its first request."""
    parsing.resource_class_from_type = resource_class_from_type
    cloudformation_responses.get_stack_from_s3_url = get_stack_from_s3_url
    sagemaker_models.FakeEndpointConfig.validate_instance_type = validate_instance_type
    sagemaker_models.SageMakerModelBackend.validate_production_variants = validate_production_variants
    SageMakerResponse.create_inference_component = create_inference_component_action
    SageMakerResponse.describe_inference_component = describe_inference_component_action
    SageMakerResponse.delete_inference_component = delete_inference_component_action
    SageMakerResponse.list_inference_components = list_inference_components_action
    autoscaling_models._target_params_are_valid = target_params_are_valid
    cloudformation_models.CloudFormationBackend.execute_change_set = execute_change_set
    kms_models.Key.create_from_cloudformation_json = classmethod(create_key_from_cloudformation_json)
    sagemaker_models.FakeEndpoint.cloudformation_name_type = staticmethod(lambda: "EndpointName")
    sagemaker_models.FakeEndpoint.has_cfn_attr = classmethod(lambda cls, attr: attr in ("EndpointName", "EndpointArn"))
    sagemaker_models.FakeEndpoint.get_cfn_attribute = endpoint_attribute
    apigatewayv2_urls.url_paths["{0}/v2/apis/(?P<api_id>[^/]+)/deployments$"] = deployments_dispatch
    apigateway_models.APIGatewayBackend.import_rest_api = import_rest_api
    apigateway_models.APIGatewayBackend.put_rest_api = put_rest_api


def command(port: int) -> list[str]:
    """The server on 127.0.0.1:`port`. (Not `python -m`: moto files each model under its module's
    second name, which `__main__` lacks.)"""
    return [sys.executable, "-c", "from tests.deploy.moto_aws import main; main()",
            "--host", "127.0.0.1", "--port", str(port)]


def main() -> None:
    from moto.server import main as serve

    install()
    serve(sys.argv[1:])
