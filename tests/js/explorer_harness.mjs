// Runs the explorers' front-end rules and definitions (crossvit/widgets/explorer.js) under node for the tests:
// reads {"module": path, "packet": packet (base64 arrays), "steps": [...]} as JSON on stdin and writes one JSON
// result per step. A step is {"op": ..., ...}:
//   specs / view / normalize {kind, state}; change {kind, state, name, value}; select {state, row, col, branch};
//   point {state, where, u, v} (a click on the picture); cache {} (what the cache holds, in bytes and entries);
//   branch_rollout {branch, image, fusion, ratio, start}; joint_rollout {image, fusion, start}.
import { pathToFileURL } from "node:url";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const js = await import(pathToFileURL(input.module).href);
const data = await js.decodePacket(input.packet);
if (input.cache_limit !== undefined) data.cacheLimit = input.cache_limit;

const plain = (x) => (ArrayBuffer.isView(x) ? Array.from(x) : x);
function plainView(view) {
  const out = {};
  for (const [k, v] of Object.entries(view)) out[k] = plain(v);
  return out;
}

const results = [];
for (const step of input.steps) {
  const rules = step.kind === "attention" ? js.attention : js.rollout;
  switch (step.op) {
    case "specs": results.push(rules.specs(data, step.state)); break;
    case "normalize": results.push(rules.normalize(data, step.state)); break;
    case "view": results.push(plainView(rules.view(data, step.state))); break;
    case "change": results.push(rules.change(data, step.state, step.name, step.value)); break;
    case "select": results.push(js.attention.select(data, step.state, step.row, step.col, step.branch)); break;
    case "branch_rollout":
      results.push(plain(js.branchRollout(data, js.branchSites(data, step.branch, step.start), step.image,
                                          step.fusion, step.ratio)));
      break;
    case "joint_rollout": {
      const rows = js.jointRollout(data, step.image, step.fusion, step.start), out = {};
      for (const [q, r] of Object.entries(rows)) out[q] = Object.fromEntries(Object.entries(r).map(([b, v]) => [b, plain(v)]));
      results.push(out);
      break;
    }
    case "point": results.push(js.attention.pointToPatch(data, step.state, step.where, step.u, step.v)); break;
    case "cache": results.push({ bytes: data.cachedBytes, entries: data.cache.size }); break;
    case "fixed": results.push(js.fixed(step.x, step.digits)); break;
    default: throw new Error(`unknown op ${step.op}`);
  }
}
process.stdout.write(JSON.stringify(results));
