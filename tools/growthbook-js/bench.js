// GrowthBook's JavaScript SDK on the same workloads as verdict's criterion bench
// (crates/verdict-core/benches/assign.rs): decisions per second, one core.
// Prints one JSON line per workload: {"id", "decisions_per_sec"}.
"use strict";
process.env.NODE_ENV = "production";
const { GrowthBookClient } = require("@growthbook/growthbook");

const USERS = 1000;
const users = [];
for (let i = 0; i < USERS; i++) {
  users.push({ attributes: { user_id: "user-" + i, country: ["TH", "US", "DE"][i % 3], age: 16 + (i % 50) } });
}
const client = new GrowthBookClient({});

function experiment(variants, condition) {
  const e = { key: "exp-bench", variations: [...Array(variants).keys()], hashAttribute: "user_id" };
  if (condition) e.condition = { country: { $in: ["TH", "US"] }, age: { $gte: 18 } };
  return e;
}

for (const variants of [2, 4]) {
  for (const condition of [false, true]) {
    const exp = experiment(variants, condition);
    const run = (rounds) => {
      let inside = 0;
      for (let r = 0; r < rounds; r++) {
        for (let i = 0; i < USERS; i++) {
          if (client.runInlineExperiment(exp, users[i]).inExperiment) inside++;
        }
      }
      return inside;
    };
    run(200); // warm up the JIT
    let rounds = 200;
    let elapsed = 0;
    while (elapsed < 2e9) {
      const t0 = process.hrtime.bigint();
      run(rounds);
      elapsed = Number(process.hrtime.bigint() - t0);
      if (elapsed < 2e9) rounds *= 2;
    }
    const id = `${variants}v_${condition ? "condition" : "plain"}`;
    console.log(JSON.stringify({ id, decisions_per_sec: (rounds * USERS) / (elapsed / 1e9) }));
  }
}
