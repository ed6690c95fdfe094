// Llama 2's real token counts (its SentencePiece vocabulary, via llama-tokenizer-js) of the
// JSON list of texts on stdin, BOS included. Literal "<s>"/"</s>" count as text, so counts
// of rendered prompts come out a little high: fine for checking an upper bound.
import { readFileSync } from "node:fs";
import llamaTokenizer from "llama-tokenizer-js";

const texts = JSON.parse(readFileSync(0, "utf-8"));
process.stdout.write(JSON.stringify(texts.map((text) => llamaTokenizer.encode(text).length)));
