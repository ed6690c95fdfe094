"""Llama 2 token counts that need no tokenizer, and the prompt budget a question must fit.

No LangChain here: the WebSocket handler and the REST routes validate a question with these
before anything imports the chat modules (about a second of a cold start).
"""

import re

from chalicelib.errors import InvalidRequest

# Llama 2's tokenizer is SentencePiece with byte fallback: every token covers at
# least one UTF-8 byte, so a text's byte count bounds its token count from above.
# A message adds at most this many tokens of template around it
# ("<s>[INST] ", " [/INST]", " </s>", "<<SYS>>\n", "\n<</SYS>>\n\n").
TEMPLATE_TOKENS_PER_MESSAGE = 20
# The BOS token the tokenizer puts in front of the prompt.
PROMPT_START_TOKENS = 1

# Text with meaning to Llama 2's prompt: "<s>" and "</s>" are the BOS and EOS special
# tokens (the tokenizer finds them inside text), "[INST]", "[/INST]", "<<SYS>>" and
# "<</SYS>>" delimit turns and the system prompt. In users' and the model's words
# they are broken with a zero-width space, so no message can forge a turn or a system
# prompt. The stored history keeps the words as they were.
_PROMPT_MARKERS = re.compile(r"</?s>|\[/?INST\]|<</?SYS>>")


def neutralize_markers(text: str) -> str:
    return _PROMPT_MARKERS.sub(lambda marker: marker[0][0] + "\u200b" + marker[0][1:], text)


def token_upper_bound(text: str) -> int:
    """At least as many tokens as Llama 2 makes of `text` as one chat message."""
    return len(neutralize_markers(text).encode("utf-8")) + TEMPLATE_TOKENS_PER_MESSAGE


def prompt_token_upper_bound(texts) -> int:
    """At least as many tokens as a prompt of these messages' texts."""
    return PROMPT_START_TOKENS + sum(map(token_upper_bound, texts))


def fixed_prompt_tokens(settings, query: str) -> int:
    """The prompt's tokens besides the history (system prompt and question); a 400 if
    they alone leave no room in the prompt budget."""
    fixed = prompt_token_upper_bound([settings.system_prompt, query])
    if fixed > settings.prompt_token_budget:
        raise InvalidRequest(
            f"'query' is too long for the model's context: about {fixed} tokens with the system "
            f"prompt, {settings.prompt_token_budget} allowed",
            field="query",
        )
    return fixed
