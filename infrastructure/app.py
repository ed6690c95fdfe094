#!/usr/bin/env python3
"""CDK entry point: `cdk synth|deploy|destroy [-c stage=prod] [-c key=value ...]` from this folder.

The stack is environment-agnostic (no account or region here), so synth needs no AWS
credentials; the region comes from the deploying profile.
"""

import sys
from pathlib import Path

# The project root, for the schema and settings shared with the chat service (chalicelib).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infrastructure import stack_names  # noqa: E402
from infrastructure.chatbot_stack import ChatbotConfig, ChatbotStack  # noqa: E402

# The CLI runs apps with failSynthOnValidationErrors off, so an unacknowledged cdk-nag
# finding would only be printed; set after the CLI's context, it stops synth and deploy.
app = cdk.App(post_cli_context={"@aws-cdk/core:failSynthOnValidationErrors": True})
config = ChatbotConfig.from_context(app.node)
ChatbotStack(
    app,
    stack_names.stack_name(config.stage),
    config=config,
    description=config.description,
)
cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
app.synth()
