"""Token counts that need no tokenizer, for each documented chat model, and the prompt budget a
question must fit.

No LangChain here: the WebSocket handler and the REST routes validate a question with these
before anything imports the chat modules (about a second of a cold start).

Every documented model's tokenizer makes at most one token of each UTF-8 byte of text: Llama 2's
and Mistral's are SentencePiece with byte fallback and no normalisation (a piece covers at least
one byte; only the dummy prefix "▁" adds one, which the template allowance covers); Llama 3's is
byte-level BPE (a token is at least one byte). So a text's byte count, plus the tokens its chat
template puts around it, bounds its token count from above. Each family's numbers were measured
from its own tokenizer and are checked against it in tests/test_token_bound.py.
"""

import re
from dataclasses import dataclass

from chalicelib.errors import InvalidRequest


@dataclass(frozen=True)
class ModelFamily:
    """What a family's tokenizer and chat template add to text, and the longest token it has."""

    # At most this many tokens of template around one message.
    template_tokens_per_message: int
    # The prompt's tokens besides its messages' (BOS, the template's fixed text, the answer's header).
    prompt_start_tokens: int
    # What an answer takes in a later prompt beyond the tokens generated for it (its end, the
    # end-of-turn token, is generated and counted).
    answer_template_tokens: int
    # The most UTF-8 bytes one token decodes to: an answer of N tokens is at most N times this long.
    longest_token_bytes: int
    # Stop sequences unless STOP_SEQUENCES says otherwise.
    stop_sequences: tuple[str, ...]

    def token_upper_bound(self, text: str) -> int:
        """At least as many tokens as the model makes of `text` as one chat message."""
        return len(neutralize_markers(text).encode("utf-8")) + self.template_tokens_per_message

    def prompt_token_upper_bound(self, texts) -> int:
        """At least as many tokens as a prompt of these messages' texts."""
        return self.prompt_start_tokens + sum(map(self.token_upper_bound, texts))


# Llama 2 (meta-llama/Llama-2-7b-chat-hf, tokenizer_config.json chat_template): a message adds at
# most "<s>[INST] ", " [/INST]", " </s>", "<<SYS>>\n", "\n<</SYS>>\n\n"; the prompt its BOS. The
# longest token is "▁административ", 27 bytes (of 32,000: tests/test_llama2_vocabulary.py).
LLAMA_2 = ModelFamily(template_tokens_per_message=20, prompt_start_tokens=1,
                      # An answer's leading space in " </s>".
                      answer_template_tokens=1, longest_token_bytes=27,
                      # Llama 2 sometimes starts a new user turn itself, in plain text.
                      stop_sequences=("[INST]",))
# Llama 3.1 (meta-llama/Llama-3.1-8B-Instruct, tokenizer_config.json chat_template): a message is
# "<|start_header_id|>" role "<|end_header_id|>\n\n" content "<|eot_id|>", 5 tokens around it; the
# prompt adds "<|begin_of_text|>" (1), the system block's "Cutting Knowledge Date: December
# 2023\nToday Date: 26 Jul 2024\n\n" (20) and the answer's header "<|start_header_id|>assistant
# <|end_header_id|>\n\n" (4). The longest of its 128,000 ordinary tokens is 128 spaces. It ends a
# turn with the special <|eot_id|> (generation_config.json eos_token_id), which the containers stop
# on and leave out of the text, so no text stop sequence is needed.
LLAMA_3_1 = ModelFamily(template_tokens_per_message=5, prompt_start_tokens=25,
                        # An answer's header in history: <|start_header_id|>assistant<|end_header_id|>\n\n.
                        answer_template_tokens=4, longest_token_bytes=128, stop_sequences=())
# Mistral 7B Instruct v0.3 (mistralai/Mistral-7B-Instruct-v0.3, tokenizer v3, 32,768 tokens): a user
# message is "[INST] " content "[/INST]" (the system prompt joins the last one, "\n\n" after it),
# an answer " " content "</s>"; at most 4 tokens around each with the dummy prefix. The prompt's
# BOS. The longest piece is "▁Становништво", 25 bytes. It ends with </s>, which the containers stop on.
MISTRAL_V3 = ModelFamily(template_tokens_per_message=4, prompt_start_tokens=1,
                         # An answer's leading space in " " content "</s>".
                         answer_template_tokens=1, longest_token_bytes=25, stop_sequences=())


@dataclass(frozen=True)
class ChatModel:
    """A documented model: what the page calls it and its family."""

    display_name: str
    family: ModelFamily


# The models documented and tested (docs/serving.md), by their Hugging Face id (the stack's model_id).
MODELS = {
    "meta-llama/Llama-2-7b-chat-hf": ChatModel("Llama 2 7B Chat", LLAMA_2),
    "meta-llama/Llama-3.1-8B-Instruct": ChatModel("Llama 3.1 8B Instruct", LLAMA_3_1),
    "mistralai/Mistral-7B-Instruct-v0.3": ChatModel("Mistral 7B Instruct v0.3", MISTRAL_V3),
}
DEFAULT_MODEL_ID = "meta-llama/Llama-2-7b-chat-hf"

# Text with meaning to one of the documented models' prompts, which a tokenizer finds inside text
# (the containers render the chat template to text and tokenize it with its special tokens):
# - Llama 2: "<s>", "</s>" (BOS, EOS), "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>" (turns, system);
# - Llama 3.1: its 256 special tokens, all "<|name|>" (<|begin_of_text|>, <|start_header_id|>,
#   <|end_header_id|>, <|eot_id|>, <|eom_id|>, <|python_tag|>, <|finetune_right_pad_id|>,
#   <|reserved_special_token_0..247|>...);
# - Mistral v0.3: its control tokens "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]",
#   "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[control_8]"
#   .. "[control_768]" (in mistral-common's copy of v3 some are "[IMG]", "[PREFIX]", "[MIDDLE]",
#   "[SUFFIX]"): every one a bracketed capitalised word or "[control_N]".
# In users' and the model's words they are broken with a zero-width space after the first
# character, whatever model is deployed, so no message can forge a turn, a system prompt or a
# tool call in any of them. Text of the same shape that is no marker ("[NOTE]") only gains an
# invisible break; the stored history keeps the words as they were.
_PROMPT_MARKERS = re.compile(r"</?s>|<unk>|<</?SYS>>|<\|\w+\|>|\[/?[A-Z][A-Z_]*\]|\[control_\d+\]")


def neutralize_markers(text: str) -> str:
    return _PROMPT_MARKERS.sub(lambda marker: marker[0][0] + "\u200b" + marker[0][1:], text)


def fixed_prompt_tokens(settings, query: str) -> int:
    """The prompt's tokens besides the history (system prompt and question); a 400 if
    they alone leave no room in the prompt budget."""
    fixed = settings.model.family.prompt_token_upper_bound([settings.system_prompt, query])
    if fixed > settings.prompt_token_budget:
        raise InvalidRequest(
            f"'query' is too long for the model's context: about {fixed} tokens with the system "
            f"prompt, {settings.prompt_token_budget} allowed",
            field="query",
        )
    return fixed
