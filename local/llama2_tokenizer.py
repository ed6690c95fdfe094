"""Llama 2's real token counts, from its SentencePiece vocabulary through `llama-tokenizer-js`
(npm, in node_modules), for the fake endpoint when a test or the benchmark needs the counts a
real TGI endpoint would give. One node process answers line by line: a per-text process would
cost a third of a second a count.
"""

import json
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Reads one JSON string a line, writes its token count a line (no BOS; the leading space
# SentencePiece adds, as Llama 2's tokenizer does after a special token).
_COUNTER = """
import readline from "node:readline";
import tokenizer from "llama-tokenizer-js";
const lines = readline.createInterface({input: process.stdin});
lines.on("line", (line) => process.stdout.write(tokenizer.encode(JSON.parse(line), false).length + "\\n"));
"""
BOS_TOKENS = EOS_TOKENS = 1


class Llama2Tokenizer:
    def __init__(self):
        self._process = subprocess.Popen(
            ["node", "--input-type=module", "-e", _COUNTER], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        with self._lock:
            self._process.stdin.write(json.dumps(text) + "\n")
            self._process.stdin.flush()
            return int(self._process.stdout.readline())

    def prompt_tokens(self, messages: list[dict]) -> int:
        """The tokens of a chat prompt in Llama 2's template (`<s>[INST] <<SYS>>…<</SYS>> q
        [/INST] a </s>…`), its special tokens counted as the single tokens they are."""
        system = ""
        if messages and messages[0]["role"] == "system":
            system = f"<<SYS>>\n{messages[0]['content']}\n<</SYS>>\n\n"
            messages = messages[1:]
        total = 0
        for index, message in enumerate(messages):
            content = message["content"].strip()
            if message["role"] == "user":
                total += BOS_TOKENS + self.count(f"[INST] {system if index == 0 else ''}{content} [/INST]")
            else:
                total += self.count(content) + EOS_TOKENS
        return total

    def answer_tokens(self, answer: str) -> int:
        """What generating `answer` costs: its tokens and the end of sequence."""
        return self.count(answer.strip()) + EOS_TOKENS

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=10)
