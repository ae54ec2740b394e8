// Reads `verdict assign` NDJSON on stdin and answers each line with GrowthBook's own
// JavaScript SDK, in the same output shape. Used as a differential oracle by
// scripts/test (see scripts/differential-assign).
"use strict";
process.env.NODE_ENV = "production"; // silence the SDK's console warnings
const { GrowthBook } = require("@growthbook/growthbook");
const readline = require("readline");

function toSdkExperiment(def) {
  let keys, weights;
  if (Array.isArray(def.variants)) {
    keys = def.variants.map((v) => v.key);
    const w = def.variants.map((v) => v.weight).filter((x) => x !== undefined && x !== null);
    weights = w.length ? w : undefined;
  } else {
    keys = Object.keys(def.models);
    weights = def.traffic_split ? keys.map((k) => def.traffic_split[k] / 100) : undefined;
  }
  const exp = { key: def.experiment_id, variations: keys };
  if (weights) exp.weights = weights;
  if (def.coverage !== undefined && def.coverage !== null) exp.coverage = def.coverage;
  exp.hashAttribute = def.hash_attribute || "user_id";
  if (def.hash_version !== undefined && def.hash_version !== null) exp.hashVersion = def.hash_version;
  if (def.seed) exp.seed = def.seed;
  if (def.namespace) exp.namespace = [def.namespace.id, def.namespace.range[0], def.namespace.range[1]];
  if (def.condition) exp.condition = def.condition;
  return exp;
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
rl.on("line", (line) => {
  if (!line.trim()) return;
  const input = JSON.parse(line);
  const exp = toSdkExperiment(input.experiment);
  const attributes = Object.assign({}, input.attributes || {});
  if (input.user_id !== undefined && input.user_id !== null) attributes.user_id = input.user_id;
  const gb = new GrowthBook({ attributes });
  const r = gb.run(exp);
  out.push(
    JSON.stringify({
      variant: r.inExperiment ? r.value : null,
      in_experiment: r.inExperiment,
      bucket: r.hashUsed && r.bucket !== undefined ? r.bucket : null,
    })
  );
  gb.destroy();
});
rl.on("close", () => {
  process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
});
