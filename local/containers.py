"""The containers a local endpoint can speak, by the app's SERVING value: each module is the one
home of its container's rules and offers the stand-ins the same names (NAME, parse_chat_request,
check_parameters, template_error, generation_error, TokenLimits, token_limits, Model, SSE_DONE,
SSE_KEEP_ALIVE, VALIDATES_IN_STREAM)."""

from local import tgi, vllm

CONTAINERS = {tgi.NAME: tgi, vllm.NAME: vllm}
