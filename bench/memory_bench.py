"""How much of the prompt budget the history window fills, counted with Llama 2's real tokenizer.

A long English conversation through the chat service (moto's in-process DynamoDB, the fake
endpoint counting with `Llama2Tokenizer`, the `local` stage's limits), twice: with the
endpoint's token counts kept per turn, and without them (the safe upper bound alone, as every
turn stored before counts were kept). At the measured turns: the real prompt tokens over the
budget, and how many earlier turns the model saw; and how often the endpoint refused a prompt
as too long (the retry with a smaller window is the backstop; it should never be needed).
"""

import itertools

from bench.quiet import app_output_discarded
from chalicelib.settings import Settings

MEASURED_TURNS = (100, 1000)
# The `local` stage's limits: a 1536-token prompt budget.
LIMITS = {"MAX_INPUT_TOKENS": "1536", "MAX_TOTAL_TOKENS": "2048", "MAX_NEW_TOKENS": "256"}
_SENTENCES = (
    "I have been reading about the history of the printing press and how it changed Europe.",
    "Could you explain why the cost of paper fell so quickly in the fifteenth century?",
    "My teacher said that literacy rates rose slowly at first, which surprised me a little.",
    "What would you say were the most important books printed in the first fifty years?",
    "I am also curious how news travelled between cities before newspapers were common.",
    "Please keep the answer short, but give one or two concrete examples with dates.",
    "Last week we visited a museum with an old press, and the guide showed us the type.",
)


_ANSWER = (
    "That is a good question, and the short answer is that it depends on the period you look at. "
    "In the first decades after Gutenberg, presses spread along the trade routes of the Rhine "
    "and into Italy, where paper mills already existed and merchants could finance the work. "
    "Prices fell as printers competed, and by 1500 there were presses in more than two hundred "
    "towns. Readers were still a minority, but books, pamphlets and calendars reached far more "
    "people than manuscripts ever had."
)


def english_answer(number: int, question: str) -> str:
    """A Llama-sized answer (about 110 tokens), a little different each turn."""
    return f"Answer {number}. {_ANSWER}"


def english_questions():
    """Questions of one or two sentences, endlessly, each a little different."""
    for number in itertools.count(1):
        start, length = number % len(_SENTENCES), 1 + number % 2
        sentences = [_SENTENCES[(start + i) % len(_SENTENCES)] for i in range(length)]
        yield f"Question {number}. " + " ".join(sentences)


def converse(turns: int, keep_counts: bool, measured=MEASURED_TURNS) -> dict:
    """Run `turns` turns of one conversation; the real prompt at each measured turn, and how
    many prompts the endpoint refused as too long."""
    import boto3
    from moto import mock_aws

    from chalicelib import clients, llm
    from chalicelib.chat import ChatService
    from chalicelib.store import ChatStore
    from chalicelib.table import create_table_request
    from local.fake_model import FakeEndpoint
    from local.llama2_tokenizer import Llama2Tokenizer

    settings = Settings.model_validate(
        # One user asks every turn at once: no rate limit in the way.
        {"SAGEMAKER_ENDPOINT_NAME": "memory", "CHAT_TABLE_NAME": "memory", "TURNS_PER_MINUTE": turns, **LIMITS}
    )
    tokenizer = Llama2Tokenizer()
    endpoint = FakeEndpoint(settings.max_input_tokens, settings.max_total_tokens, tokenizer=tokenizer,
                            reports_usage=keep_counts, answer_for=english_answer)

    def model_for(read_timeout):
        client = clients.sagemaker_runtime(read_timeout)
        endpoint.attach(client)
        return llm.chat_model(settings, client)

    results = {"too_long": 0}
    try:
        with mock_aws():
            dynamodb = boto3.client("dynamodb")
            dynamodb.create_table(**create_table_request("memory"))
            service = ChatService(settings, ChatStore.open(dynamodb, "memory", ttl_days=30), model_for)
            for number, query in zip(range(1, turns + 1), english_questions(), strict=False):
                calls = len(endpoint.requests)
                turn = service.reply("memory-bench-user", "memory", query)
                results["too_long"] += len(endpoint.requests) - calls - 1
                if number in measured:
                    results[number] = {
                        "prompt_tokens": endpoint.prompt_tokens[-1],
                        "budget": settings.prompt_token_budget,
                        "history_turns": turn.history_turns,
                    }
    finally:
        tokenizer.close()
    return results


def report(turns: int = max(MEASURED_TURNS)) -> None:
    print(f"History window, {turns} turns of English ({LIMITS['MAX_INPUT_TOKENS']}-token prompt budget), "
          "real Llama 2 tokens:")
    print("  turn  counts kept               prompt / budget  history turns  too-long refusals")
    for keep_counts, label in ((False, "no (upper bound only)"), (True, "yes (endpoint's usage)")):
        with app_output_discarded():
            result = converse(turns, keep_counts)
        for turn in MEASURED_TURNS:
            row = result[turn]
            share = row["prompt_tokens"] / row["budget"]
            print(f"  {turn:>4}  {label:<24}  {row['prompt_tokens']:>5} / {row['budget']} ({share:4.0%})  "
                  f"{row['history_turns']:>13}  {result['too_long']:>17}")


if __name__ == "__main__":
    report()
