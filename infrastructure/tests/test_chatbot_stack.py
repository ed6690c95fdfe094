"""The synthesized template: every resource, property and output the chatbot relies on."""

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks
from templates import build, only

from chalicelib import table as chat_table
from chalicelib.settings import (
    DEFAULT_MAX_INPUT_TOKENS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_TOTAL_TOKENS,
)
from infrastructure import cost, stack_names
from infrastructure.chatbot_stack import (
    TGI_IMAGE_REPOSITORY,
    TGI_IMAGE_TAG,
    TGI_REGISTRY_ACCOUNTS,
    ChatbotConfig,
    ChatbotStack,
)

# Actions IAM only grants on Resource "*" (no resource-level permissions).
ACTIONS_WITHOUT_RESOURCES = {"ecr:GetAuthorizationToken"}


@pytest.fixture(scope="module")
def scaled_stack():
    return build(ChatbotConfig(autoscaling=True, autoscaling_max_instances=3))


@pytest.fixture(scope="module")
def scaled_template(scaled_stack):
    return Template.from_stack(scaled_stack)


def test_model_runs_tgi_2_image_from_the_regions_registry(template):
    assert TGI_IMAGE_TAG.split("-")[1].startswith("tgi2.")
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "PrimaryContainer": {
                "Image": {
                    "Fn::Join": [
                        "",
                        [
                            {"Fn::FindInMap": ["TgiImageRegistry", {"Ref": "AWS::Region"}, "account"]},
                            ".dkr.ecr.",
                            {"Ref": "AWS::Region"},
                            ".",
                            {"Ref": "AWS::URLSuffix"},
                            f"/{TGI_IMAGE_REPOSITORY}:{TGI_IMAGE_TAG}",
                        ],
                    ]
                }
            }
        },
    )
    mapping = template.to_json()["Mappings"]["TgiImageRegistry"]
    assert mapping["us-east-1"] == {"account": "763104351884"}
    assert mapping["eu-south-1"] == {"account": "692866216735"}
    assert mapping.keys() == TGI_REGISTRY_ACCOUNTS.keys()


def test_deploying_to_an_unmapped_region_fails_listing_the_supported_ones(template):
    (assertion,) = template.to_json()["Rules"]["SupportedRegion"]["Assertions"]
    assert assertion["Assert"] == {"Fn::Contains": [sorted(TGI_REGISTRY_ACCOUNTS), {"Ref": "AWS::Region"}]}
    assert "us-east-1, us-east-2, us-west-1, us-west-2" in assertion["AssertDescription"]


def test_a_stack_pinned_to_a_region_resolves_the_image_at_synth():
    pinned = Template.from_stack(build(ChatbotConfig(), env=cdk.Environment(region="eu-south-1")))
    image = ["692866216735.dkr.ecr.eu-south-1.", {"Ref": "AWS::URLSuffix"}, f"/{TGI_IMAGE_REPOSITORY}:{TGI_IMAGE_TAG}"]
    pinned.has_resource_properties("AWS::SageMaker::Model", {"PrimaryContainer": {"Image": {"Fn::Join": ["", image]}}})
    assert "Mappings" not in pinned.to_json()
    assert "SupportedRegion" not in pinned.to_json()["Rules"]


def test_a_stack_pinned_to_an_unmapped_region_is_refused():
    with pytest.raises(ValueError, match=r"region eu-central-2; supported: af-south-1, .*, us-west-2$"):
        build(ChatbotConfig(), env=cdk.Environment(region="eu-central-2"))


def test_model_environment_has_limits_from_settings_and_token_by_reference(template):
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "PrimaryContainer": {
                "Environment": {
                    "HF_MODEL_ID": "meta-llama/Llama-2-7b-chat-hf",
                    "SM_NUM_GPUS": "1",
                    "MAX_INPUT_TOKENS": str(DEFAULT_MAX_INPUT_TOKENS),
                    "MAX_TOTAL_TOKENS": str(DEFAULT_MAX_TOTAL_TOKENS),
                    "HF_TOKEN": "{{resolve:secretsmanager:llama2-chatbot/hf-token:SecretString:::}}",
                }
            }
        },
    )


def test_model_runs_as_the_execution_role(template):
    role_id, _ = only(template, "AWS::IAM::Role")
    template.has_resource_properties(
        "AWS::SageMaker::Model", {"ExecutionRoleArn": {"Fn::GetAtt": [role_id, "Arn"]}}
    )


def test_endpoint_config_gives_a_7b_model_time_to_download_and_load(template):
    model_id, _ = only(template, "AWS::SageMaker::Model")
    _, config = only(template, "AWS::SageMaker::EndpointConfig")
    (variant,) = config["Properties"]["ProductionVariants"]
    assert variant["InstanceType"] == "ml.g5.2xlarge"
    assert variant["InitialInstanceCount"] == 1
    assert variant["ModelName"] == {"Fn::GetAtt": [model_id, "ModelName"]}
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] >= 900
    assert variant["ModelDataDownloadTimeoutInSeconds"] >= 900


def test_endpoint_is_named_for_the_stage(template):
    config_id, _ = only(template, "AWS::SageMaker::EndpointConfig")
    template.has_resource_properties(
        "AWS::SageMaker::Endpoint",
        {
            "EndpointName": "llama2-chatbot-dev",
            "EndpointConfigName": {"Fn::GetAtt": [config_id, "EndpointConfigName"]},
        },
    )


def test_execution_role_is_for_sagemaker_with_no_managed_policies(template):
    template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}}
                ]
            },
            "ManagedPolicyArns": Match.absent(),
        },
    )
    template.resource_count_is("AWS::IAM::Policy", 0)


def test_execution_role_may_only_pull_the_image_and_write_logs(template):
    _, role = only(template, "AWS::IAM::Role")
    actions = {
        action
        for policy in role["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        for action in _as_list(statement["Action"])
    }
    assert actions == {
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:GetAuthorizationToken",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
    }


@pytest.mark.parametrize("name", ["template", "scaled_template"])
def test_no_statement_grants_data_actions_on_every_resource(request, name):
    resources = request.getfixturevalue(name).to_json()["Resources"].values()
    statements = [
        statement
        for resource in resources
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::Policy")
        # A role's inline policies, or a managed policy's own document.
        for policy in resource["Properties"].get("Policies", [resource["Properties"]])
        if "PolicyDocument" in policy
        for statement in policy["PolicyDocument"]["Statement"]
    ]
    assert statements
    for statement in statements:
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= ACTIONS_WITHOUT_RESOURCES, statement


def test_table_has_the_chat_services_schema(template):
    request = chat_table.create_table_request("llama2-chatbot-dev-chat")
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "TableName": request["TableName"],
            "KeySchema": request["KeySchema"],
            "AttributeDefinitions": request["AttributeDefinitions"],
            "GlobalSecondaryIndexes": request["GlobalSecondaryIndexes"],
            "BillingMode": request["BillingMode"],
            "TimeToLiveSpecification": {"AttributeName": chat_table.TTL_ATTRIBUTE, "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    )


def table_key(template: Template) -> tuple[str, dict]:
    """The key the table names, and its resource."""
    _, table = only(template, "AWS::DynamoDB::Table")
    (key_id, _) = table["Properties"]["SSESpecification"]["KMSMasterKeyId"]["Fn::GetAtt"]
    return key_id, template.to_json()["Resources"][key_id]


def test_table_is_kept_with_its_key_on_stack_deletion_unless_asked_otherwise(template):
    template.has_resource("AWS::DynamoDB::Table", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"})
    # A kept table keeps its key: without it neither the table nor its backups could be read.
    assert table_key(template)[1]["DeletionPolicy"] == "Retain"
    disposable = Template.from_stack(build(ChatbotConfig(stage="test", retain_table=False)))
    disposable.has_resource("AWS::DynamoDB::Table", {"DeletionPolicy": "Delete"})
    assert table_key(disposable)[1]["DeletionPolicy"] == "Delete"
    # The longest waiting period: a deleted table's backup stays restorable meanwhile.
    assert table_key(disposable)[1]["Properties"]["PendingWindowInDays"] == 30


def test_table_is_encrypted_with_a_rotated_key_of_its_own_whose_use_iam_grants(template):
    key_id, key = table_key(template)
    _, table = only(template, "AWS::DynamoDB::Table")
    assert table["Properties"]["SSESpecification"] == {
        "SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]},
    }
    assert key["Properties"]["EnableKeyRotation"] is True
    # The account administers the key, and IAM policies grant its use (the functions': through
    # DynamoDB, for this table, function_policies.table_key); nobody holds it by the key policy.
    (statement,) = key["Properties"]["KeyPolicy"]["Statement"]
    assert statement["Principal"] == {"AWS": {"Fn::Join": ["", [
        "arn:", {"Ref": "AWS::Partition"}, ":iam::", {"Ref": "AWS::AccountId"}, ":root"]]}}
    # A key of its own, not the turns' (whose key policy lets SNS, SQS and CloudWatch use it).
    assert "Sid" not in statement and key_id.startswith("ChatTableKey")
    template.has_output(stack_names.TABLE_KEY_ARN_OUTPUT, {"Value": {"Fn::GetAtt": [key_id, "Arn"]}})


def test_cost_counts_the_stacks_keys(template, scaled_template):
    for each in (template, scaled_template):
        each.resource_count_is("AWS::KMS::Key", cost.KMS_KEYS)


def test_outputs_carry_what_chalice_needs(template):
    endpoint_id, _ = only(template, "AWS::SageMaker::Endpoint")
    table_id, _ = only(template, "AWS::DynamoDB::Table")
    expected = {
        "EndpointName": {"Fn::GetAtt": [endpoint_id, "EndpointName"]},
        "EndpointArn": {"Fn::GetAtt": [endpoint_id, "EndpointArn"]},
        "TableName": {"Ref": table_id},
        "TableArn": {"Fn::GetAtt": [table_id, "Arn"]},
        "MaxInputTokens": str(DEFAULT_MAX_INPUT_TOKENS),
        "MaxTotalTokens": str(DEFAULT_MAX_TOTAL_TOKENS),
        "MaxNewTokens": str(DEFAULT_MAX_NEW_TOKENS),
    }
    for key, value in expected.items():
        template.has_output(key, {"Value": value})


def test_every_output_has_its_name_in_stack_names(template):
    declared = {value for name, value in vars(stack_names).items() if name.endswith("_OUTPUT")}
    # The default stage has none of the OPTIONAL_ENVIRONMENT_OUTPUTS (test_idle_scaling has them).
    assert set(template.find_outputs("*")) == declared | set(stack_names.ENVIRONMENT_OUTPUTS.values())


def test_resources_are_tagged_for_cost_allocation(template):
    template.has_resource_properties(
        "AWS::SageMaker::Endpoint",
        {"Tags": Match.array_with([{"Key": "project", "Value": "llama2-chatbot"}, {"Key": "stage", "Value": "dev"}])},
    )


def test_no_auto_scaling_unless_asked(template):
    template.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 0)
    template.resource_count_is("AWS::ApplicationAutoScaling::ScalingPolicy", 0)


def test_auto_scaling_tracks_the_concurrent_requests_each_instance_serves(scaled_template):
    """SageMaker's high-resolution concurrency metric (every 10 s, queued requests included),
    kept at 75 % of the 8 generations one A10G serves at once."""
    endpoint_id, _ = only(scaled_template, "AWS::SageMaker::Endpoint")
    target_id, _ = only(scaled_template, "AWS::ApplicationAutoScaling::ScalableTarget")
    scaled_template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {
            "ServiceNamespace": "sagemaker",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "ResourceId": {
                "Fn::Join": ["", ["endpoint/", {"Fn::GetAtt": [endpoint_id, "EndpointName"]}, "/variant/AllTraffic"]]
            },
            "MinCapacity": 1,
            "MaxCapacity": 3,
            # Without a role, the service uses its SageMaker service-linked role.
            "RoleARN": Match.absent(),
        },
    )
    scaled_template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "ScalingTargetId": {"Ref": target_id},
            "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantConcurrentRequestsPerModelHighResolution"
                },
                "TargetValue": 6,
            },
        },
    )
    scaled_template.resource_count_is("AWS::IAM::Role", 1)


@pytest.mark.parametrize("name", ["stack", "scaled_stack"])
def test_aws_solutions_checks_find_nothing_unacknowledged(request, name):
    report = AwsSolutionsChecks().validate_scope(request.getfixturevalue(name))
    assert [violation.rule_name for violation in report.violations] == []
    assert report.success


def test_context_values_choose_stage_and_settings():
    app = cdk.App(
        context={
            "stage": "prod",
            "instance_type": "ml.g5.4xlarge",
            "instance_count": "2",
            "max_new_tokens": "256",
            "autoscaling": "true",
            "autoscaling_max_instances": 4,
            "retain_table": "false",
        }
    )
    config = ChatbotConfig.from_context(app.node)
    assert config == ChatbotConfig(
        stage="prod",
        instance_type="ml.g5.4xlarge",
        instance_count=2,
        max_new_tokens=256,
        autoscaling=True,
        autoscaling_max_instances=4,
        retain_table=False,
    )
    prod = Template.from_stack(ChatbotStack(app, stack_names.stack_name(config.stage), config=config))
    assert prod.to_json()["Outputs"]["MaxNewTokens"]["Value"] == "256"
    prod.has_resource_properties("AWS::SageMaker::Endpoint", {"EndpointName": "llama2-chatbot-prod"})
    prod.has_resource_properties("AWS::DynamoDB::Table", {"TableName": "llama2-chatbot-prod-chat"})


@pytest.mark.parametrize(
    "context, message",
    [
        ({"autoscaling": "yes"}, r"autoscaling='yes': expected bool"),
        ({"instance_count": "two"}, r"instance_count='two': expected int"),
        ({"instance_count": True}, r"instance_count=True: expected int"),
        ({"instance_count": "0"}, r"instance_count=0: must be at least 1"),
        ({"stage": "Prod_1"}, r"stage='Prod_1'"),
        ({"max_new_tokens": "4096"}, r"token limits: .*MAX_TOTAL_TOKENS must be larger than MAX_NEW_TOKENS"),
        ({"max_total_tokens": "-1"}, r"token limits: Input should be greater than 0"),
        ({"max_input_tokens": "4096"}, r"token limits: .*MAX_INPUT_TOKENS must be less than MAX_TOTAL_TOKENS"),
        ({"autoscaling": "true", "instance_count": "3"}, r"autoscaling_max_instances must be at least"),
        ({"log_retention_days": "45"}, r"log_retention_days=45: one of 1, 3, 5, 7, 14, 30, 60"),
        ({"log_retention_days": "0"}, r"log_retention_days=0: one of"),
        ({"instance_type": "ml.g6.2xlarge"}, r"generations_per_copy: no default for instance_type=ml.g6.2xlarge"),
        ({"generations_per_copy": "-1"}, r"generations_per_copy=-1: must be at least 1"),
        ({"autoscaling_concurrency_percent": "0"}, r"autoscaling_concurrency_percent=0: must be from 1 to 100"),
        ({"autoscaling": "true", "autoscaling_max_instances": "126"}, r"1008 workers; an SQS event source runs"),
        ({"autoscaling_invocations_per_instance": "10"},
         r"^context autoscaling_invocations_per_instance was removed: use autoscaling_concurrency_percent"),
    ],
)
def test_invalid_context_is_refused_before_synth(context, message):
    with pytest.raises(ValueError, match=message):
        ChatbotConfig.from_context(cdk.App(context=context).node)


def _as_list(value):
    return value if isinstance(value, list) else [value]
