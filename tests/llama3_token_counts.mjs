// Llama 3.1's real token counts (its byte-level BPE vocabulary and its special tokens, which it
// finds inside text, via llama3-tokenizer-js) of the JSON list of texts on stdin, no BOS or EOS
// added: the rendered prompts carry their own "<|begin_of_text|>".
import { readFileSync } from "node:fs";
import llama3Tokenizer from "llama3-tokenizer-js";

const texts = JSON.parse(readFileSync(0, "utf-8"));
process.stdout.write(JSON.stringify(texts.map((text) => llama3Tokenizer.encode(text, { bos: false, eos: false }).length)));
