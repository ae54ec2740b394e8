// Writes N random `verdict assign` input lines (deterministic for a seed) covering
// weights (valid and invalid), coverage (incl. out of range), hash versions 1/2/unknown,
// seeds, hash attributes, namespaces, conditions, and ids in many scripts.
// usage: node gen-assign-cases.js N SEED
"use strict";
const n = parseInt(process.argv[2] || "10000", 10);
let s = parseInt(process.argv[3] || "1", 10) >>> 0;
function rnd() {
  // mulberry32
  s = (s + 0x6d2b79f5) >>> 0;
  let t = s;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const ids = [
  () => "user-" + Math.floor(rnd() * 1e6),
  () => String(Math.floor(rnd() * 1e9)),
  () => pick(["สมชาย", "สวัสดีครับ", "ผู้ใช้-" + Math.floor(rnd() * 1000)]),
  () => pick(["😀", "user-🎉-" + Math.floor(rnd() * 100), "👩‍💻"]),
  () => pick(["José", "Zoë-" + Math.floor(rnd() * 100), "Ünïcödé-user", "François"]),
  () => pick(["你好", "ユーザー" + Math.floor(rnd() * 100), "사용자"]),
  () => "",
];
const conditions = [
  { country: "TH" },
  { country: { $in: ["TH", "US"] } },
  { age: { $gt: 30 } },
  { age: { $gte: "18", $lt: 65 } },
  { $or: [{ country: "US" }, { tags: { $elemMatch: { $eq: "vip" } } }] },
  { app_version: { $vgte: "2.1.0" } },
  { email: { $regex: "@example\\.com$" } },
  { $not: { country: "DE" } },
  { tags: { $size: { $gt: 1 } } },
  { device_id: { $exists: true } },
];
function variants(k) {
  const keys = ["control", "treatment", "t2", "t3"].slice(0, k);
  const mode = pick(["none", "valid", "valid", "invalid", "skewed"]);
  return keys.map((key, i) => {
    const v = { key, model: "m-" + key };
    if (mode === "valid") v.weight = 1 / k;
    if (mode === "skewed") v.weight = i === 0 ? 0.1 : 0.9 / (k - 1);
    if (mode === "invalid") v.weight = 0.5;
    return v;
  });
}
const out = [];
for (let i = 0; i < n; i++) {
  const exp = { experiment_id: pick(["exp-001", "my-test", "homepage-recs", "ranking.v2"]), variants: variants(2 + Math.floor(rnd() * 3)) };
  if (rnd() < 0.4) exp.coverage = pick([0.1, 0.5, 0.95, 1, 0, -0.1, 1.5, rnd()]);
  if (rnd() < 0.6) exp.hash_version = pick([1, 2, 2, 3]);
  if (rnd() < 0.3) exp.seed = pick(["", "seed-a", "ถ้วย", "😀"]);
  if (rnd() < 0.2) exp.hash_attribute = pick(["user_id", "device_id", "company"]);
  if (rnd() < 0.3) {
    const a = Math.floor(rnd() * 10) / 10;
    exp.namespace = { id: pick(["layer-1", "homepage"]), range: [a, Math.min(1, a + 0.3)] };
  }
  if (rnd() < 0.35) exp.condition = pick(conditions);
  const line = { experiment: exp };
  if (rnd() < 0.95) line.user_id = pick(ids)();
  const attrs = {};
  if (rnd() < 0.7) attrs.country = pick(["TH", "US", "DE", "th"]);
  if (rnd() < 0.5) attrs.age = pick([17, 30, 31, 64, "45", null]);
  if (rnd() < 0.4) attrs.tags = pick([["vip"], ["a", "b"], [], ["vip", "new"]]);
  if (rnd() < 0.4) attrs.device_id = pick(ids)();
  if (rnd() < 0.3) attrs.company = pick([42, "acme", "", 0]);
  if (rnd() < 0.3) attrs.app_version = pick(["2.0.9", "2.1.0", "v2.10.1", "2.1.0-beta"]);
  if (rnd() < 0.3) attrs.email = pick(["a@example.com", "b@test.org"]);
  if (Object.keys(attrs).length) line.attributes = attrs;
  out.push(JSON.stringify(line));
}
process.stdout.write(out.join("\n") + "\n");
