"""The longest answer an endpoint can give, from each documented model family's own vocabulary:
no token decodes to more UTF-8 bytes than its family's `longest_token_bytes` assumes."""

import json
import subprocess

from chalicelib.token_bounds import LLAMA_2, LLAMA_3_1, MISTRAL_V3
from tests.servers import ROOT
from tests.test_token_bound import mistral_v3

# The UTF-8 length of every token as it decodes ("▁" is a space); byte-fallback tokens <0xNN>
# decode to one byte, or to U+FFFD (3 bytes) alone; <unk>, <s> and </s> decode to nothing.
LLAMA_2_LONGEST_TOKEN = """
import("llama-tokenizer-js").then(({default: tokenizer}) => {
  const lengths = tokenizer.vocabById.map((token, id) =>
    id < 3 ? 0 : /^<0x[0-9A-F]{2}>$/.test(token) ? 3 : Buffer.byteLength(token.replaceAll("\\u2581", " ")));
  process.stdout.write(String(Math.max(...lengths)) + " " + tokenizer.vocabById.length);
});
"""
# Llama 3's tokens are byte strings written in GPT-2's byte-to-character map; its 256 special
# tokens (128000 on) decode to nothing.
LLAMA_3_VOCABULARY = """
import("llama3-tokenizer-js").then(({default: tokenizer}) =>
  process.stdout.write(JSON.stringify(tokenizer.vocabById.slice(0, 128000))));
"""


def node(script: str) -> str:
    return subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True,
                          check=True, cwd=ROOT).stdout


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's map of bytes to printable characters, reversed (byte-level BPE's token spelling)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters = {byte: byte for byte in printable}
    extra = (byte for byte in range(256) if byte not in characters)
    characters |= {byte: 256 + n for n, byte in enumerate(extra)}
    return {chr(character): byte for byte, character in characters.items()}


def test_no_llama_2_token_decodes_to_more_bytes_than_its_family_assumes():
    longest, vocabulary = map(int, node(LLAMA_2_LONGEST_TOKEN).split())
    assert vocabulary == 32000
    assert longest == LLAMA_2.longest_token_bytes


def test_no_llama_3_token_decodes_to_more_bytes_than_its_family_assumes():
    decoder = gpt2_byte_decoder()
    tokens = [bytes(decoder[c] for c in token) for token in json.loads(node(LLAMA_3_VOCABULARY))]
    # A token that is part of a character decodes, alone, to U+FFFD for each broken sequence.
    lengths = [len(token.decode("utf-8", errors="replace").encode("utf-8")) for token in tokens]
    assert len(tokens) == 128000
    assert max(lengths) == LLAMA_3_1.longest_token_bytes


def test_no_mistral_v3_token_decodes_to_more_bytes_than_its_family_assumes():
    tokenizer = mistral_v3()
    lengths = []
    for token in range(tokenizer.get_piece_size()):
        piece = tokenizer.id_to_piece(token)
        if tokenizer.is_control(token) or tokenizer.is_unknown(token):
            lengths.append(0)
        elif tokenizer.is_byte(token):
            lengths.append(1 if int(piece[3:5], 16) < 0x80 else 3)
        else:
            lengths.append(len(piece.replace("\u2581", " ").encode("utf-8")))
    assert tokenizer.get_piece_size() == 32768
    assert max(lengths) == MISTRAL_V3.longest_token_bytes
