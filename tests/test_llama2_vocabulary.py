"""The longest answer an endpoint can give, from Llama 2's own vocabulary (llama-tokenizer-js)."""

import subprocess

from chalicelib.llm import LONGEST_TOKEN_BYTES
from tests.servers import ROOT

# The UTF-8 length of every token as it decodes ("▁" is a space); byte-fallback tokens <0xNN>
# decode to one byte, or to U+FFFD (3 bytes) alone; <unk>, <s> and </s> decode to nothing.
LONGEST_TOKEN = """
import("llama-tokenizer-js").then(({default: tokenizer}) => {
  const lengths = tokenizer.vocabById.map((token, id) =>
    id < 3 ? 0 : /^<0x[0-9A-F]{2}>$/.test(token) ? 3 : Buffer.byteLength(token.replaceAll("\\u2581", " ")));
  process.stdout.write(String(Math.max(...lengths)) + " " + tokenizer.vocabById.length);
});
"""


def test_no_llama2_token_decodes_to_more_bytes_than_the_answer_cap_assumes():
    result = subprocess.run(["node", "--input-type=module", "-e", LONGEST_TOKEN], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    longest, vocabulary = map(int, result.stdout.split())
    assert vocabulary == 32000
    assert longest == LONGEST_TOKEN_BYTES
