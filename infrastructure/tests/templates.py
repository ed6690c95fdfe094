"""Helpers the stack's template tests share: build a stage's stack, find its one resource of a type."""

import aws_cdk as cdk
from aws_cdk.assertions import Template

from infrastructure import stack_names
from infrastructure.chatbot_stack import ChatbotConfig, ChatbotStack


def build(config: ChatbotConfig, **stack_kwargs) -> ChatbotStack:
    return ChatbotStack(cdk.App(), stack_names.stack_name(config.stage), config=config, **stack_kwargs)


def only(template: Template, resource_type: str, construct: str = "") -> tuple[str, dict]:
    """The logical id and body of the template's single resource of this type (of those whose
    logical id starts with `construct`, the id of the construct holding them)."""
    (item,) = [item for item in template.find_resources(resource_type).items() if item[0].startswith(construct)]
    return item
