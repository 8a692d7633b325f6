// The front end of crossvit's attention and rollout explorers (an anywidget ES module, shipped in the package).
//
// Python records and packs; this module draws and answers every control in the browser. It receives one packet
// per explorer (images, masks, every recorded attention map, the patch grids' geometry, colour tables, and the
// class-specific maps Python computed) and from then on needs no kernel: the same code runs in JupyterLab, in a
// notebook page saved with its widget state, and in a standalone HTML file.
//
// Sections: bytes and arrays; the definitions (head fusion, per-branch and joint rollout, patches to pixels, the
// pointing game), each the JavaScript twin of a function of crossvit.rollout / crossvit.explain / crossvit.metrics;
// the explorers' rules (controls, state, what the picture shows), twins of crossvit/widgets/{attention,rollout}.py;
// drawing; the widget. tests/test_explorer_js.py runs the first three sections under node and holds them equal to
// the Python side on the same packets.

// ---------------------------------------------------------------------------------------------------------------
// bytes and arrays

/** Bytes of a packet value: a DataView / ArrayBuffer / typed array (a kernel's buffers) or a base64 string (a
 * saved page, a standalone file). */
export function bytesOf(data) {
  if (typeof data === "string") {
    const text = atob(data);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError("a packet array holds no bytes");
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

let HALF_TABLE = null;
function halfTable() {
  if (HALF_TABLE === null) {
    HALF_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
      HALF_TABLE[h] = exponent === 0 ? sign * fraction * 2 ** -24
        : exponent === 31 ? (fraction ? NaN : sign * Infinity)
        : sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
    }
  }
  return HALF_TABLE;
}

/** An array of the packet ({dtype, shape, zlib, data}) as {shape, data}: data a typed array in C order (float16
 * arrives as a Float32Array). */
export async function decodeArray(spec) {
  let bytes = bytesOf(spec.data);
  if (spec.zlib) bytes = await inflate(bytes);
  const buffer = bytes.slice().buffer; // aligned, owned
  const types = { uint8: Uint8Array, int16: Int16Array, float32: Float32Array, uint16: Uint16Array };
  let data;
  if (spec.dtype === "float16") {
    const half = new Uint16Array(buffer), table = halfTable();
    data = new Float32Array(half.length);
    for (let i = 0; i < half.length; i++) data[i] = table[half[i]];
  } else if (types[spec.dtype]) {
    data = new types[spec.dtype](buffer);
  } else {
    throw new TypeError(`unknown dtype ${spec.dtype}`);
  }
  return { shape: spec.shape, data };
}

function hexColour(hex) {
  return [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
}

/** The packet with every array decoded: what the explorers' rules and drawing read. */
export async function decodePacket(packet) {
  const geometry = {};
  for (const [branch, g] of Object.entries(packet.geometry)) {
    geometry[branch] = { grid: g.grid, edges: g.edges, covered: g.covered, cells: (await decodeArray(g.cells)).data };
  }
  const sites = [];
  for (const s of packet.sites) {
    const map = await decodeArray(s.map);
    sites.push({ name: s.name, block: s.block, branch: s.branch, kind: s.kind, index: s.index, shape: map.shape,
                 data: map.data });
  }
  const maps = new Map();
  for (const [key, spec] of Object.entries(packet.maps || {})) maps.set(key, (await decodeArray(spec)).data);
  const [H, W] = packet.image_size;
  return {
    ...packet, H, W, B: packet.num_images, geometry, sites, maps,
    siteByName: new Map(sites.map((s) => [s.name, s])),
    images: (await decodeArray(packet.images)).data,
    masks: packet.masks ? (await decodeArray(packet.masks)).data : null,
    lut: { heat: packet.colors.heat.map(hexColour), signed: packet.colors.signed.map(hexColour) },
    cache: new Map(), cachedBytes: 0, cacheLimit: CACHE_BYTES,
  };
}

const CACHE_BYTES = 64 * 2 ** 20;

/** `compute()` once per `key`: results kept for later, the least recently used dropped first beyond
 * `data.cacheLimit` bytes (CACHE_BYTES), so memory stays bounded however long a reader explores. */
function remember(data, key, compute) {
  const hit = data.cache.get(key);
  if (hit !== undefined) {
    data.cache.delete(key); // most recently used goes last
    data.cache.set(key, hit);
    return hit.value;
  }
  const value = compute();
  const bytes = ArrayBuffer.isView(value) ? value.byteLength : 32 * (value.length || 1);
  data.cache.set(key, { value, bytes });
  data.cachedBytes += bytes;
  for (const [old, entry] of data.cache) {
    if (data.cachedBytes <= data.cacheLimit || old === key) break;
    data.cache.delete(old);
    data.cachedBytes -= entry.bytes;
  }
  return value;
}

/** Maps computed on demand by a kernel (the rollout explorer's `_extra`), added to the decoded packet. */
export async function addMaps(data, extra) {
  for (const [key, spec] of Object.entries(extra || {})) {
    if (!data.maps.has(key)) data.maps.set(key, (await decodeArray(spec)).data);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// the definitions (crossvit.rollout, crossvit.explain.patch_map_to_pixels, crossvit.metrics.pointing_game)

const HEAD_FUSIONS = ["mean", "max", "min"];

/** Row `q` of image `i` of a site's map (B, heads, Nq, Nk), one head (a number) or fused ("mean", "max", "min"):
 * crossvit.plotting.fuse on the map's row. */
export function fuseRow(site, i, q, head) {
  const [, heads, nq, nk] = site.shape, d = site.data, out = new Float64Array(nk);
  if (typeof head === "number") {
    const o = ((i * heads + head) * nq + q) * nk;
    for (let k = 0; k < nk; k++) out[k] = d[o + k];
    return out;
  }
  if (!HEAD_FUSIONS.includes(head)) throw new Error(`head fusion must be one of ${HEAD_FUSIONS}, got ${head}`);
  const first = (i * heads * nq + q) * nk;
  for (let k = 0; k < nk; k++) out[k] = d[first + k];
  for (let h = 1; h < heads; h++) {
    const o = ((i * heads + h) * nq + q) * nk;
    for (let k = 0; k < nk; k++) {
      const v = d[o + k];
      if (head === "mean") out[k] += v;
      else if (head === "max") { if (v > out[k]) out[k] = v; }
      else if (v < out[k]) out[k] = v;
    }
  }
  if (head === "mean") for (let k = 0; k < nk; k++) out[k] /= heads;
  return out;
}

/** Image `i`'s whole map of a site with heads fused, (Nq * Nk) (crossvit.rollout.fuse_heads); cached. */
export function fusedMap(data, site, i, fusion) {
  return remember(data, `fused|${site.name}|${i}|${fusion}`, () => {
    const [, , nq, nk] = site.shape, out = new Float64Array(nq * nk);
    for (let q = 0; q < nq; q++) out.set(fuseRow(site, i, q, fusion), q * nk);
    return out;
  });
}

/** Zero the lowest `ratio` of the entries of an (N, N) map, the CLS row (row 0) untouched:
 * crossvit.rollout.discard_lowest (k = int(ratio * (N - 1) * N) entries; among equal values the first go first). */
export function discardLowest(fused, n, ratio) {
  if (ratio === 0) return fused;
  const count = (n - 1) * n, k = Math.floor(ratio * count);
  if (k === 0) return fused;
  const rest = fused.subarray(n), sorted = Float64Array.from(rest).sort();
  const threshold = sorted[k - 1];
  let below = 0;
  for (let j = 0; j < count; j++) if (rest[j] < threshold) below++;
  let ties = k - below;
  const out = Float64Array.from(fused), tail = out.subarray(n);
  for (let j = 0; j < count; j++) {
    if (rest[j] < threshold) tail[j] = 0;
    else if (rest[j] === threshold && ties > 0) { tail[j] = 0; ties--; }
  }
  return out;
}

/** Per-branch rollout (crossvit.rollout.rollout_from_maps) of image `i` through `sites` (one branch's
 * self-attention sites in forward order): R = A'_L ... A'_1, A' = rownorm(0.5 A + 0.5 I); returns R[CLS, :]
 * (N entries: the CLS's own column first, then the patches). */
export function branchRollout(data, sites, i, fusion, discardRatio) {
  const n = sites[0].shape[2];
  let row = new Float64Array(n);
  row[0] = 1;
  for (let s = sites.length - 1; s >= 0; s--) {
    const a = discardLowest(fusedMap(data, sites[s], i, fusion), n, discardRatio);
    const scaled = new Float64Array(n); // row / (0.5 * rowsum(A) + 0.5), entry by entry
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let k = 0; k < n; k++) sum += a[j * n + k];
      scaled[j] = row[j] / (0.5 * sum + 0.5);
    }
    const next = new Float64Array(n);
    for (let j = 0; j < n; j++) {
      const w = 0.5 * scaled[j];
      if (w === 0) continue;
      for (let k = 0; k < n; k++) next[k] += w * a[j * n + k];
    }
    for (let k = 0; k < n; k++) next[k] += 0.5 * scaled[k];
    row = next;
  }
  return row;
}

/** The self-attention sites of `branch` from block `start` on, forward order. */
export function branchSites(data, branch, start) {
  return data.sites.filter((s) => s.branch === branch && s.kind === "self" && s.block >= start);
}

/** Joint rollout (docs/rollout.md, crossvit.rollout.joint_rollout) of image `i` from block `start`: the CLS rows of
 * R = M_L ... M_1 over T = [CLS_s, patches_s, CLS_l, patches_l]. A self-attention layer of branch b is the
 * identity except for b's block, rownorm(0.5 A + 0.5 I); a fusion layer is the identity except for the row of
 * CLS_b, rownorm(0.5 e(CLS_b) + 0.5 (c[0] e(CLS_b) + sum_j c[j] e(patch_other_j))); A and c fused over heads.
 * Rows propagate as vectors, v <- v M, last layer first. Returns {small: {small, large}, large: {...}}: per query
 * CLS, its row over each branch's tokens (CLS column first). */
export function jointRollout(data, i, fusion, start) {
  const branches = data.branches, counts = {}, offsets = {};
  let total = 0;
  for (const b of branches) {
    counts[b] = data.geometry[b].grid[0] * data.geometry[b].grid[1] + 1;
    offsets[b] = total;
    total += counts[b];
  }
  const rows = branches.map((b) => { const r = new Float64Array(total); r[offsets[b]] = 1; return r; });
  const layers = data.sites.filter((s) => s.block >= start);
  for (let l = layers.length - 1; l >= 0; l--) {
    const site = layers[l], b = site.branch, o = offsets[b];
    if (site.kind === "self") {
      const n = counts[b], a = fusedMap(data, site, i, fusion), sums = new Float64Array(n);
      for (let j = 0; j < n; j++) { let s = 0; for (let k = 0; k < n; k++) s += a[j * n + k]; sums[j] = 0.5 * s + 0.5; }
      for (const r of rows) {
        const v = new Float64Array(n);
        for (let j = 0; j < n; j++) v[j] = r[o + j] / sums[j];
        for (let k = 0; k < n; k++) r[o + k] = 0.5 * v[k];
        for (let j = 0; j < n; j++) {
          const w = 0.5 * v[j];
          if (w === 0) continue;
          for (let k = 0; k < n; k++) r[o + k] += w * a[j * n + k];
        }
      }
    } else {
      const c = fuseRow(site, i, 0, fusion), other = branches.find((x) => x !== b), p = offsets[other];
      let sum = 0;
      for (let k = 0; k < c.length; k++) sum += c[k];
      const norm = 0.5 + 0.5 * sum;
      for (const r of rows) {
        const w = r[o] / norm;
        r[o] = w * (0.5 + 0.5 * c[0]);
        for (let k = 1; k < c.length; k++) r[p + k] += 0.5 * w * c[k];
      }
    }
  }
  const out = {};
  branches.forEach((q, qi) => {
    out[q] = {};
    for (const b of branches) out[q][b] = rows[qi].slice(offsets[b], offsets[b] + counts[b]);
  });
  return out;
}

/** A patch map of `branch` (its patches in row-major order) spread over the input pixels, (H * W):
 * crossvit.patch_map_to_pixels; `density` divides by the pixels a patch covers. */
export function patchToPixels(data, branch, values, density = false) {
  const g = data.geometry[branch], cells = g.cells, out = new Float64Array(cells.length);
  const scale = density ? 1 / g.covered : 1;
  for (let p = 0; p < cells.length; p++) { const c = cells[p]; out[p] = c < 0 ? 0 : values[c] * scale; }
  return out;
}

/** The model-level map of a joint rollout (crossvit.explain.joint_rollout_pixels): per query CLS, both grids'
 * patch rows as mass per pixel, added; then the mean over the query CLS tokens. */
export function jointPixels(data, rows) {
  const out = new Float64Array(data.H * data.W), queries = Object.keys(rows);
  for (const q of queries) {
    for (const b of data.branches) {
      const px = patchToPixels(data, b, rows[q][b].subarray(1), true);
      for (let p = 0; p < out.length; p++) out[p] += px[p] / queries.length;
    }
  }
  return out;
}

/** The maximal pixels of a map (within a relative 1e-6 of its maximum, as crossvit.metrics.pointing_game finds
 * them): their indices. */
export function maximalPixels(map) {
  let top = -Infinity;
  for (const v of map) if (v > top) top = v;
  const floor = Number.isFinite(top) ? top - 1e-6 * Math.abs(top) : top, out = [];
  for (let p = 0; p < map.length; p++) if (map[p] >= floor) out.push(p);
  return out;
}

/** numpy.percentile(|map|, q) (linear interpolation) as crossvit.plotting.signed_scale uses it: the scale of a
 * signed map (its maximum when that percentile is 0, 1 for an all-zero map). */
export function signedScale(map, q) {
  const a = Float64Array.from(map, Math.abs).sort(), pos = (a.length - 1) * q / 100;
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  let scale = a[lo] + (a[hi] - a[lo]) * (pos - lo);
  if (!(scale > 0)) scale = a[a.length - 1];
  return scale > 0 ? scale : 1;
}

// ---------------------------------------------------------------------------------------------------------------
// the explorers' rules: controls, state and what the picture shows (twins of the Python classes)

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;" };
function escapeHtml(text) { return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]); }

/** Python's format(x, f".{digits}f"): the exact binary value rounded, half to even on an exact tie (toFixed
 * rounds the exact value too, but a tie away from zero). */
export function fixed(x, digits) {
  const text = x.toFixed(digits), exact = Math.abs(x).toFixed(100); // every digit of a double's exact value
  const tail = exact.slice(exact.indexOf(".") + 1 + digits);
  if (!/^50*$/.test(tail)) return text;
  const kept = exact.slice(0, exact.indexOf(".") + 1 + digits).replace(/\.$/, "");
  const last = Number(kept[kept.length - 1]);
  if (last % 2 === 1) return text; // the tie goes away from zero, which is up to the even digit here
  return (x < 0 && Number(kept) !== 0 ? "-" : "") + kept; // the even digit is kept: round towards zero
}

function percent(x) { return `${fixed(100 * x, 0)}%`; }

function slider(description, min, max, { step = 1, disabled = false, tooltip = "" } = {}) {
  return { type: "slider", description, min, max, step, disabled, tooltip };
}
function menu(description, options, { buttons = false, disabled = false, tooltip = "" } = {}) {
  return { type: buttons ? "buttons" : "menu", description, options, disabled, tooltip };
}

function grid(data, branch) { return data.geometry[branch].grid; }
function otherBranch(data, branch) { return data.branches.find((b) => b !== branch); }
function classLabel(data, k) { return data.class_names[k]; }
// as base.py's image_label: "image 2", or "image 2: cat.jpg" when the images have names (HTML-escaped)
function imageLabel(data, i) {
  return escapeHtml(data.image_names ? `image ${i}: ${data.image_names[i]}` : `image ${i}`);
}

export const attention = {
  controls: ["image", "block", "branch", "kind", "layer", "head", "query", "patch_row", "patch_col"],
  keys: ["image", "block", "branch", "kind", "layer", "head", "query", "patch_row", "patch_col", "notice"],

  siteSize(data, s) {
    if (s.kind === "self") return [data.depth[s.branch][s.block], data.heads[s.branch]];
    return [data.fusion_layers, data.cross_heads[s.branch]];
  },

  specs(data, s) {
    const [layers, heads] = this.siteSize(data, s), [rows, cols] = grid(data, s.branch);
    const patchOff = s.query === "CLS";
    const patchTip = patchOff ? "the query is the CLS token: choose query patch to pick a patch" : "";
    const headOptions = [["mean of heads", "mean"], ["max of heads", "max"], ["min of heads", "min"]];
    for (let h = 0; h < heads; h++) headOptions.push([`head ${h}`, h]);
    return {
      image: slider("image", 0, data.B - 1),
      block: slider("block", 0, data.num_blocks - 1),
      branch: menu("branch", data.branches.map((b) => [b, b])),
      kind: menu("kind", [["self", "self"], ["cross", "cross"]], { buttons: true }),
      layer: slider("layer", 0, Math.max(0, layers - 1), {
        disabled: layers <= 1, tooltip: layers <= 1 ? `this ${s.kind}-attention site has a single layer` : "" }),
      head: menu("head", headOptions),
      query: menu("query", [["CLS", "CLS"], ["patch", "patch"]], { buttons: true }),
      patch_row: slider("patch row", 0, rows - 1, { disabled: patchOff, tooltip: patchTip }),
      patch_col: slider("patch column", 0, cols - 1, { disabled: patchOff, tooltip: patchTip }),
    };
  },

  /** Fit the layer, the head and the patch to the block, branch and kind (AttentionExplorer._normalize). */
  normalize(data, s) {
    const out = { ...s }, [layers, heads] = this.siteSize(data, out), [rows, cols] = grid(data, out.branch);
    out.layer = Math.min(out.layer, layers - 1);
    if (typeof out.head === "number" && !(out.head >= 0 && out.head < heads)) out.head = "mean";
    out.patch_row = Math.min(out.patch_row, rows - 1);
    out.patch_col = Math.min(out.patch_col, cols - 1);
    return out;
  },

  /** A reader sets control `name` to `value` (AttentionExplorer.set_control). */
  change(data, s, name, value) {
    return this.normalize(data, { ...s, notice: "", [name]: value });
  },

  /** A click on patch (row, col) of `branch`'s grid (AttentionExplorer.select_patch). */
  select(data, s, row, col, branch) {
    const changed = s.kind !== "self" ? [`kind ${s.kind} -> self`] : [];
    if (branch !== s.branch) changed.push(`branch ${s.branch} -> ${branch}`);
    const notice = changed.length ? `You picked ${branch} patch (${row}, ${col}); a patch has no cross-attention `
      + `row, so this is its self-attention (${changed.join(", ")}). ` : "";
    return this.normalize(data, { ...s, branch, query: "patch", kind: "self", patch_row: row, patch_col: col,
                                  notice });
  },

  gridBranch(data, s) { return s.kind === "self" ? s.branch : otherBranch(data, s.branch); },

  /** The grid the picture shows, which a click picks from (AttentionExplorer.shown_grid). */
  shownGrid(data, s) { return s.kind === "cross" && s.query !== "CLS" ? s.branch : this.gridBranch(data, s); },

  /** The patch [branch, row, col] under a click at (u, v), fractions (0..1 from the top left) of the image panel
   * (`where` "image") or the grid panel ("grid"), on the grid the picture shows; null where there is none (the
   * margin, or the grid panel while it shows no row). */
  pointToPatch(data, s, where, u, v) {
    const branch = this.shownGrid(data, s), [rows, cols] = grid(data, branch);
    let row, col;
    if (where === "image") {
      const edges = data.geometry[branch].edges, x = u * data.W, y = v * data.H; // input pixels
      col = edges.filter((e) => e <= x).length - 1;
      row = edges.filter((e) => e <= y).length - 1;
    } else {
      if (s.kind === "cross" && s.query !== "CLS") return null;
      col = Math.floor(u * cols);
      row = Math.floor(v * rows);
    }
    return row >= 0 && row < rows && col >= 0 && col < cols ? [branch, row, col] : null;
  },

  /** What the picture and caption show (AttentionExplorer.view). */
  view(data, s) {
    const i = s.image, branch = s.branch, name = `blocks.${s.block}.${branch}.${s.kind}.${s.layer}`;
    const cols = grid(data, branch)[1];
    const token = s.query === "CLS" ? 0 : 1 + s.patch_row * cols + s.patch_col;
    const query = s.query === "CLS" ? `${branch} CLS` : `${branch} patch (${s.patch_row}, ${s.patch_col})`;
    const gridBranch = this.gridBranch(data, s), predicted = escapeHtml(classLabel(data, data.predictions[i]));
    const patch = s.query === "CLS" ? null : [branch, s.patch_row, s.patch_col];
    if (s.kind === "cross" && token !== 0) {
      return {
        site: name, row: null, grid_branch: branch, lines: branch, query_patch: patch, query_cell: false,
        vmax: null, note: "A patch token has no cross-attention row: only the two CLS tokens are fusion queries "
          + "(each reads the other branch's patches). Pick query CLS, or kind self.",
        title: `${name}: ${query} has no cross-attention row`, image_title: `query: ${query}`, panel_title: "",
        caption: `<b>${imageLabel(data, i)}</b> (predicted: ${predicted}). <b>${query}</b> is a patch token: `
          + "a patch has no "
          + "cross-attention row, because only the CLS tokens attend to the other branch in a fusion layer. Choose "
          + `query <i>CLS</i> to see what the ${branch} CLS reads in the ${gridBranch} branch, or kind <i>self</i> `
          + "for this patch's self-attention row.",
      };
    }
    const site = data.siteByName.get(name);
    const row = fuseRow(site, i, s.kind === "self" ? token : 0, s.head);
    let what;
    if (s.kind === "self") {
      const own = token === 0 ? "CLS->CLS" : `${query} -> ${branch} CLS`;
      what = `${query} over the ${branch} patches (self-attention); weight on the ${branch} CLS (${own}) `
        + fixed(row[0], 3);
    } else {
      what = `${branch} CLS reads the ${gridBranch} patches (cross-attention); weight on its own CLS `
        + fixed(row[0], 3);
    }
    const [rows, gcols] = grid(data, gridBranch);
    let top = -Infinity, sum = 0;
    for (let k = 1; k < row.length; k++) { if (row[k] > top) top = row[k]; sum += row[k]; }
    const headText = typeof s.head === "number" ? `head ${s.head}` : s.head;
    return {
      site: name, row: Array.from(row), grid_branch: gridBranch, lines: gridBranch, query_patch: patch,
      query_cell: patch !== null && gridBranch === branch, vmax: top > 0 ? top : 1, note: "",
      title: `${name} (${headText}): ${query} -> ${gridBranch} patches`, image_title: `${query} -> ${gridBranch} patches`,
      panel_title: `attention weights on the ${rows}x${gcols} ${gridBranch} grid`,
      caption: `${s.notice || ""}<b>${imageLabel(data, i)}</b> (predicted: ${predicted}). ${what}. Patch weights `
        + `sum to ${fixed(sum, 3)}.`,
    };
  },
};

const PREDICTED = -1;

export const rollout = {
  controls: ["image", "method", "head_fusion", "discard_ratio", "start_block", "target"],
  keys: ["image", "method", "head_fusion", "discard_ratio", "start_block", "target", "start_chosen"],

  record(data, name) { return data.methods.find((m) => m.name === name); },
  has(record, option) { return record.options.includes(option); },

  specs(data, s) {
    const r = this.record(data, s.method), names = (test) => data.methods.filter(test).map((m) => m.name);
    const specific = names((m) => m.class_specific), discarding = names((m) => this.has(m, "discard_ratio"));
    const fusing = names((m) => this.has(m, "head_fusion")), starting = names((m) => this.has(m, "start_block"));
    const classes = data.class_names.map((name, k) => [`${k}: ${name}`, k]);
    const blocks = [];
    for (let k = 0; k < data.num_blocks; k++) blocks.push([`block ${k}`, k]);
    return {
      image: slider("image", 0, data.B - 1),
      method: menu("method", data.methods.map((m) => [m.name, m.name])),
      head_fusion: menu("head fusion", HEAD_FUSIONS.map((f) => [f, f]), {
        disabled: !this.has(r, "head_fusion"),
        tooltip: this.has(r, "head_fusion") ? "" : `only ${fusing.join(", ")} fuse heads` }),
      discard_ratio: slider("discard ratio", 0, data.discard.max, {
        step: data.discard.step, disabled: !this.has(r, "discard_ratio"),
        tooltip: this.has(r, "discard_ratio") ? ""
          : `only the per-branch rollouts (${discarding.join(", ")}) discard entries` }),
      start_block: menu("start block", blocks, {
        disabled: !this.has(r, "start_block"),
        tooltip: this.has(r, "start_block") ? "" : `${s.method} has no start block (only ${starting.join(", ")} do)` }),
      target: menu("target class", [["predicted class", PREDICTED], ...classes], {
        disabled: !r.class_specific,
        tooltip: r.class_specific ? "" : `only the class-specific methods (${specific.join(", ")}) use a target class` }),
    };
  },

  normalize(data, s) { return { ...s }; },

  /** A reader sets control `name` to `value` (RolloutExplorer.set_control): until a start block is picked, each
   * method starts where explain starts it. */
  change(data, s, name, value) {
    const out = { ...s, [name]: value };
    if (name === "start_block") out.start_chosen = true;
    else if (name === "method" && !s.start_chosen) out.start_block = this.record(data, value).default_start;
    return out;
  },

  key(data, method, target, start) {
    const r = this.record(data, method);
    const t = !r.class_specific ? "any" : target === PREDICTED ? "predicted" : String(target);
    return `${method}|${t}|${this.has(r, "start_block") ? start : "-"}`;
  },

  /** Image `i`'s stored map (H * W) of a method Python computed, or null when it is not here (yet). */
  storedMap(data, s) {
    const r = this.record(data, s.method), size = data.H * data.W;
    let target = s.target, key = this.key(data, s.method, target, s.start_block);
    if (r.class_specific && target === PREDICTED && data.precomputed_classes.length === data.num_classes) {
      target = data.predictions[s.image]; // every class is here: the predicted one's map
      key = this.key(data, s.method, target, s.start_block);
    }
    const maps = data.maps.get(key);
    return maps === undefined ? null : Float64Array.from(maps.subarray(s.image * size, (s.image + 1) * size));
  },

  /** The (H * W) pixel map the controls select (RolloutExplorer.current_map), or null when a class-specific map
   * is not here (a kernel computes it on demand). */
  currentMap(data, s) {
    const r = this.record(data, s.method);
    if (r.rule === "branch") {
      const row = branchRollout(data, branchSites(data, r.branch, s.start_block), s.image, s.head_fusion,
                                s.discard_ratio);
      return patchToPixels(data, r.branch, row.subarray(1));
    }
    if (r.rule === "joint") {
      return remember(data, `joint|${s.image}|${s.head_fusion}|${s.start_block}`,
                      () => jointPixels(data, jointRollout(data, s.image, s.head_fusion, s.start_block)));
    }
    return this.storedMap(data, s);
  },

  /** What the picture and caption show (RolloutExplorer.view). */
  view(data, s) {
    const i = s.image, r = this.record(data, s.method), map = this.currentMap(data, s);
    let targetLabel = null;
    if (r.class_specific) targetLabel = classLabel(data, s.target === PREDICTED ? data.predictions[i] : s.target);
    const title = targetLabel === null ? s.method : `${s.method}\nfor class ${targetLabel}`;
    const predicted = escapeHtml(classLabel(data, data.predictions[i]));
    const settings = [];
    if (this.has(r, "head_fusion")) settings.push(`head fusion ${s.head_fusion}`);
    if (this.has(r, "discard_ratio")) settings.push(`discard ratio ${fixed(s.discard_ratio, 2)}`);
    if (this.has(r, "start_block")) settings.push(`from block ${s.start_block}`);
    if (r.class_specific) {
      settings.push(s.target === PREDICTED ? `gradients of the predicted class, ${predicted}`
        : `gradients of class ${escapeHtml(classLabel(data, s.target))}`);
    }
    const head = `<b>${imageLabel(data, i)}</b> (predicted: ${predicted}); ${s.method}`
      + (settings.length ? ` (${settings.join(", ")})` : "") + ".";
    if (map === null) {
      return { map: null, missing: true, signed: r.signed, limit: null, title, lines: null, centre: null,
               caption: head + " This map was not computed when the explorer was built: a running kernel computes "
                 + "it now; without one, choose the predicted class or a class computed in advance." };
    }
    let negative = false;
    for (const v of map) if (v < 0) { negative = true; break; }
    const signed = r.signed || negative, maximal = maximalPixels(map);
    let cy = 0, cx = 0;
    for (const p of maximal) { cy += Math.floor(p / data.W); cx += p % data.W; }
    const centre = [cy / maximal.length, cx / maximal.length];
    let verdict = "";
    if (data.masks) {
      const mask = data.masks.subarray(i * data.H * data.W, (i + 1) * data.H * data.W);
      let inside = 0;
      for (const p of maximal) inside += mask[p];
      const share = inside / maximal.length;
      verdict = ` ${percent(share)} of the maximal pixels (+ marks their centre) lie on the object: the pointing `
        + `game counts a ${share > 0.5 ? "hit" : "miss"}.`;
    }
    let unchanged = "";
    if (this.has(r, "discard_ratio") && s.discard_ratio > 0 && r.rule === "branch") {
      const plain = patchToPixels(data, r.branch,
                                  branchRollout(data, branchSites(data, r.branch, s.start_block), i, s.head_fusion,
                                                0).subarray(1));
      if (plain.every((v, p) => Math.abs(v - map[p]) <= 1e-7 + 1e-4 * Math.abs(map[p]))) {
        unchanged = " The discard ratio leaves this map as it is: the entries it zeroes are too small to move the "
          + "rolled-out CLS row.";
      }
    }
    return { map, missing: false, signed, limit: signed ? signedScale(map, data.signed_percentile) : null, title,
             lines: r.branch, centre, caption: head + verdict + unchanged };
  },
};

// ---------------------------------------------------------------------------------------------------------------
// drawing

const PANEL = 264; // CSS pixels of a square picture panel

function canvas(className, width, height) {
  const c = document.createElement("canvas");
  c.className = className;
  const ratio = globalThis.devicePixelRatio || 1;
  c.width = Math.round(width * ratio);
  c.height = Math.round(height * ratio);
  c.style.width = `${width}px`;
  c.style.height = `${height}px`;
  const g = c.getContext("2d");
  g.scale(ratio, ratio);
  return c;
}

function clear(c) {
  const g = c.getContext("2d");
  g.save();
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.clearRect(0, 0, c.width, c.height);
  g.restore();
  return g;
}

const MARCHING = (() => { // marching squares: for each corner pattern, the segments between edge midpoints
  const top = [0.5, 0], right = [1, 0.5], bottom = [0.5, 1], left = [0, 0.5];
  return [[], [[left, top]], [[top, right]], [[left, right]], [[right, bottom]], [[left, top], [right, bottom]],
          [[top, bottom]], [[left, bottom]], [[bottom, left]], [[bottom, top]], [[top, right], [bottom, left]],
          [[bottom, right]], [[right, left]], [[right, top]], [[top, left]], []];
})();

/** The mask outline of image `i`: segments of the 0.5 level line between pixel centres (marching squares, as
 * matplotlib's contour draws it), as [x0, y0, x1, y1] in input pixels from the image's top left; cached. */
function maskSegments(data, i) {
  return remember(data, `outline|${i}`, () => {
    const segments = [], { H, W } = data, m = data.masks.subarray(i * H * W, (i + 1) * H * W);
    for (let y = 0; y + 1 < H; y++) {
      for (let x = 0; x + 1 < W; x++) {
        const code = m[y * W + x] | (m[y * W + x + 1] << 1) | (m[(y + 1) * W + x + 1] << 2) | (m[(y + 1) * W + x] << 3);
        for (const [[ax, ay], [bx, by]] of MARCHING[code]) {
          segments.push([x + 0.5 + ax, y + 0.5 + ay, x + 0.5 + bx, y + 0.5 + by]); // pixel centres at +0.5
        }
      }
    }
    return segments;
  });
}

/** Paint image `i` (grey for a signed map) with an optional heat overlay (H * W values already scaled to the
 * colour map's [0, 1]) onto a canvas, each input pixel a square. */
function paintImage(c, data, i, heat = null, { lut = null, alpha = 0.6, opacity = null, grey = false } = {}) {
  const { H, W } = data, pixels = new ImageData(W, H), out = pixels.data, img = data.images;
  const base = i * H * W * 3;
  for (let p = 0; p < H * W; p++) {
    let r = img[base + 3 * p], g = img[base + 3 * p + 1], b = img[base + 3 * p + 2];
    if (grey) { const v = 0.299 * r + 0.587 * g + 0.114 * b; r = g = b = v; }
    if (heat !== null) {
      const x = heat[p], colour = lut[Math.max(0, Math.min(255, Math.floor(x * 256)))];
      const a = opacity === null ? alpha : opacity[p];
      r = a * colour[0] + (1 - a) * r; g = a * colour[1] + (1 - a) * g; b = a * colour[2] + (1 - a) * b;
    }
    out[4 * p] = r; out[4 * p + 1] = g; out[4 * p + 2] = b; out[4 * p + 3] = 255;
  }
  const g = clear(c);
  const bitmap = paintImage.scratch || (paintImage.scratch = document.createElement("canvas"));
  bitmap.width = W; bitmap.height = H;
  bitmap.getContext("2d").putImageData(pixels, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(bitmap, 0, 0, PANEL, PANEL);
  return g;
}

function drawGridLines(g, data, branch, colour, width, alpha) {
  const edges = data.geometry[branch].edges, sx = PANEL / data.W, sy = PANEL / data.H;
  g.save();
  g.strokeStyle = colour; g.globalAlpha = alpha; g.lineWidth = width;
  g.beginPath();
  for (const e of edges) {
    g.moveTo(e * sx, 0); g.lineTo(e * sx, PANEL);
    g.moveTo(0, e * sy); g.lineTo(PANEL, e * sy);
  }
  g.stroke();
  g.restore();
}

function drawOutline(g, data, i) {
  if (!data.masks) return;
  const sx = PANEL / data.W, sy = PANEL / data.H;
  g.save();
  g.strokeStyle = data.colors.mask; g.lineWidth = 1.6;
  g.beginPath();
  for (const [x0, y0, x1, y1] of maskSegments(data, i)) { g.moveTo(x0 * sx, y0 * sy); g.lineTo(x1 * sx, y1 * sy); }
  g.stroke();
  g.restore();
}

function strokeRect(g, colour, x, y, w, h, width = 2.5) {
  g.save();
  g.strokeStyle = colour; g.lineWidth = width;
  g.strokeRect(x, y, w, h);
  g.restore();
}

/** Round, readable tick values over [0, top] (about five, as matplotlib's locator picks them). */
function niceTicks(top) {
  const raw = top / 5, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let t = 0; t <= top * (1 + 1e-9); t += step) ticks.push(t);
  return ticks;
}

/** A vertical colour bar: the colour table from bottom to top, ticks at `ticks` (values in [0, 1] of the bar)
 * with `labels`, and a label along it. */
function drawColorbar(c, lut, ticks, labels, label) {
  const g = clear(c), height = PANEL * 0.85, top = (PANEL - height) / 2, x = 6, w = 14;
  for (let k = 0; k < 256; k++) {
    const [r, gg, b] = lut[k];
    g.fillStyle = `rgb(${r},${gg},${b})`;
    g.fillRect(x, top + height * (1 - (k + 1) / 256), w, height / 256 + 0.6);
  }
  g.strokeStyle = "#000"; g.lineWidth = 0.8; g.strokeRect(x, top, w, height);
  g.fillStyle = "#000"; g.font = "10px sans-serif"; g.textBaseline = "middle";
  ticks.forEach((t, k) => {
    const y = top + height * (1 - t);
    g.beginPath(); g.moveTo(x + w, y); g.lineTo(x + w + 3, y); g.stroke();
    g.fillText(labels[k], x + w + 5, y);
  });
  g.save();
  g.translate(80, PANEL / 2);
  g.rotate(-Math.PI / 2);
  g.textAlign = "center"; g.font = "11px sans-serif";
  label.split("\n").forEach((line, k, all) => g.fillText(line, 0, (k - (all.length - 1)) * 13));
  g.restore();
}

// ---------------------------------------------------------------------------------------------------------------
// the widget

const STYLE_ROOT = "cvx";

function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** One control: a slider (with its readout), a drop-down menu or a row of toggle buttons, labelled as the
 * Python side names it; `onChange(value)` gets the new value. */
class Control {
  constructor(name, spec, onChange) {
    this.name = name; this.onChange = onChange; this.type = spec.type;
    this.root = element("div", `${STYLE_ROOT}-control ${STYLE_ROOT}-${spec.type}`);
    this.root.dataset.control = name;
    this.label = element("label", `${STYLE_ROOT}-label`, spec.description);
    this.root.append(this.label);
    if (spec.type === "slider") {
      this.input = element("input");
      this.input.type = "range";
      this.input.setAttribute("aria-label", spec.description);
      this.readout = element("span", `${STYLE_ROOT}-readout`);
      this.input.addEventListener("input", () => this.onChange(Number(this.input.value)));
      this.root.append(this.input, this.readout);
    } else if (spec.type === "menu") {
      this.input = element("select");
      this.input.setAttribute("aria-label", spec.description);
      this.input.addEventListener("change", () => this.onChange(this.values[this.input.selectedIndex]));
      this.root.append(this.input);
    } else {
      this.input = element("div", `${STYLE_ROOT}-buttons`);
      this.input.setAttribute("role", "group");
      this.input.setAttribute("aria-label", spec.description);
      this.root.append(this.input);
    }
    this.shown = null;
  }

  update(spec, value) {
    const options = JSON.stringify(spec.options || [spec.min, spec.max, spec.step]);
    if (options !== this.shown) {
      this.shown = options;
      if (spec.type === "slider") {
        Object.assign(this.input, { min: spec.min, max: spec.max, step: spec.step });
      } else {
        this.values = spec.options.map((o) => o[1]);
        this.input.replaceChildren(...spec.options.map(([label], k) => {
          if (spec.type === "menu") return element("option", "", label);
          const button = element("button", `${STYLE_ROOT}-button`, label);
          button.type = "button";
          button.addEventListener("click", () => this.onChange(this.values[k]));
          return button;
        }));
      }
    }
    const index = spec.type === "slider" ? -1 : this.values.indexOf(value);
    if (spec.type === "slider") {
      this.input.value = String(value);
      this.readout.textContent = spec.step < 1 ? fixed(value, 2) : String(value);
    } else if (spec.type === "menu") {
      this.input.selectedIndex = index;
    } else {
      [...this.input.children].forEach((b, k) => {
        b.classList.toggle("mod-active", k === index);
        b.setAttribute("aria-pressed", String(k === index));
        b.disabled = spec.disabled;
      });
    }
    this.input.disabled = spec.disabled;
    this.root.classList.toggle("mod-disabled", spec.disabled);
    this.root.title = spec.tooltip;
  }
}

const LAYOUT = {
  attention: [["image", "block", "layer"], ["branch", "kind", "head"], ["query", "patch_row", "patch_col"]],
  rollout: [["image", "method"], ["head_fusion", "discard_ratio"], ["start_block", "target"]],
};

/** An explorer in the page: its controls, caption and picture, kept in step with the widget's model (a kernel's,
 * a saved page's, or a standalone file's). */
class Explorer {
  constructor(model, el, data) {
    this.model = model; this.data = data; this.rules = data.kind === "attention" ? attention : rollout;
    this.root = element("div", STYLE_ROOT);
    this.root.dataset.explorer = data.kind;
    // keys pressed on a control are the control's (a slider's arrows, a menu's), not the notebook's shortcuts
    this.root.setAttribute("data-lm-suppress-shortcuts", "true");
    this.root.addEventListener("keydown", (event) => {
      if (event.target.matches("input, select, button")) event.stopPropagation();
    });
    this.state = this.rules.normalize(data, this.readModel());
    const controls = element("div", `${STYLE_ROOT}-controls`);
    this.controls = {};
    const specs = this.rules.specs(data, this.state);
    for (const column of LAYOUT[data.kind]) {
      const box = element("div", `${STYLE_ROOT}-column`);
      for (const name of column) {
        this.controls[name] = new Control(name, specs[name], (value) => this.onControl(name, value));
        box.append(this.controls[name].root);
      }
      controls.append(box);
    }
    this.caption = element("div", `${STYLE_ROOT}-caption`);
    this.root.append(controls);
    if (data.kind === "attention") {
      this.root.append(element("div", `${STYLE_ROOT}-hint`, "Click a patch on the picture to make it the query."));
    }
    this.root.append(this.caption, this.buildFigure());
    el.append(this.root);
    this.listeners = this.rules.keys.map((key) => {
      const listener = () => { if (!this.pushing) this.scheduleSync(); };
      model.on(`change:${key}`, listener);
      return [`change:${key}`, listener];
    });
    if (data.kind === "rollout") {
      const listener = async () => { await addMaps(this.data, this.model.get("_extra")); this.draw(); };
      model.on("change:_extra", listener);
      this.listeners.push(["change:_extra", listener]);
      addMaps(data, model.get("_extra")).then(() => this.draw());
    }
    this.drawCount = 0;
    this.draw();
  }

  readModel() {
    const s = {};
    for (const key of this.rules.keys) s[key] = this.model.get(key);
    return s;
  }

  buildFigure() {
    const fig = element("div", `${STYLE_ROOT}-figure`);
    this.title = element("div", `${STYLE_ROOT}-suptitle`);
    const panels = element("div", `${STYLE_ROOT}-panels`);
    const panel = (cls) => {
      const box = element("div", `${STYLE_ROOT}-panel`), title = element("div", `${STYLE_ROOT}-title`);
      const picture = canvas(`${STYLE_ROOT}-canvas ${cls}`, PANEL, PANEL);
      const note = element("div", `${STYLE_ROOT}-note`);
      note.style.display = "none";
      box.append(title, picture, note);
      panels.append(box);
      return { box, title, canvas: picture, note };
    };
    this.left = panel(`${STYLE_ROOT}-image`);
    this.right = panel(this.data.kind === "attention" ? `${STYLE_ROOT}-grid` : `${STYLE_ROOT}-map`);
    this.colorbar = canvas(`${STYLE_ROOT}-colorbar`, 90, PANEL);
    panels.append(this.colorbar);
    if (this.data.kind === "attention") {
      this.left.canvas.addEventListener("pointerdown", (e) => this.onPointer(e, "image"));
      this.right.canvas.addEventListener("pointerdown", (e) => this.onPointer(e, "grid"));
    }
    fig.append(this.title, panels);
    return fig;
  }

  /** The model changed (the kernel set a control, or several): follow it, once, after the batch. */
  scheduleSync() {
    if (this.syncQueued) return;
    this.syncQueued = true;
    queueMicrotask(() => {
      this.syncQueued = false;
      const next = this.rules.normalize(this.data, this.readModel());
      if (JSON.stringify(next) === JSON.stringify(this.state)) return; // an echo of what is shown
      this.state = next;
      this.draw();
    });
  }

  /** A reader changed a control: answer here, now, then tell the model (the kernel, if there is one). */
  onControl(name, value) {
    if (value === this.state[name]) return;
    this.setState(this.rules.change(this.data, this.state, name, value));
  }

  setState(next) {
    this.state = next;
    this.draw();
    this.pushing = true;
    try {
      for (const key of this.rules.keys) if (this.model.get(key) !== next[key]) this.model.set(key, next[key]);
      this.model.save_changes();
    } finally {
      this.pushing = false;
    }
  }

  /** A click on the picture: the patch under it, on the grid the picture shows, becomes the query. */
  onPointer(event, where) {
    if (event.button !== 0) return;
    const box = event.currentTarget.getBoundingClientRect();
    const u = (event.clientX - box.left) / box.width, v = (event.clientY - box.top) / box.height;
    const patch = attention.pointToPatch(this.data, this.state, where, u, v);
    if (patch === null) return;
    event.preventDefault();
    const [branch, row, col] = patch;
    this.setState(attention.select(this.data, this.state, row, col, branch));
  }

  draw() {
    const specs = this.rules.specs(this.data, this.state);
    for (const [name, control] of Object.entries(this.controls)) control.update(specs[name], this.state[name]);
    this.view = this.rules.view(this.data, this.state);
    this.caption.innerHTML = this.view.caption;
    if (this.data.kind === "attention") this.drawAttention(this.view);
    else this.drawRollout(this.view);
    this.drawCount += 1;
    this.root.dataset.draws = String(this.drawCount);
    this.root.dispatchEvent(new CustomEvent("cvx-drawn", { bubbles: true }));
  }

  drawAttention(view) {
    const d = this.data, s = this.state, i = s.image;
    this.title.textContent = view.title;
    this.left.title.textContent = view.image_title;
    let heat = null;
    if (view.row !== null) {
      const patches = Float64Array.from(view.row.slice(1), (x) => x / view.vmax);
      heat = patchToPixels(d, view.grid_branch, patches);
    }
    const g = paintImage(this.left.canvas, d, i, heat, { lut: d.lut.heat, alpha: 0.6 });
    drawGridLines(g, d, view.lines, d.colors.grid[view.lines] || "#ffffff", 0.7, 0.6);
    drawOutline(g, d, i);
    if (view.query_patch !== null) {
      const [branch, r, c] = view.query_patch, e = d.geometry[branch].edges, sx = PANEL / d.W, sy = PANEL / d.H;
      strokeRect(g, d.colors.query, e[c] * sx, e[r] * sy, (e[c + 1] - e[c]) * sx, (e[r + 1] - e[r]) * sy);
    }
    const showPanel = view.row !== null;
    this.right.canvas.style.display = showPanel ? "" : "none";
    this.colorbar.style.visibility = showPanel ? "visible" : "hidden";
    this.right.note.style.display = showPanel ? "none" : "";
    this.right.note.textContent = view.note;
    this.right.title.textContent = view.panel_title;
    if (!showPanel) return;
    const [rows, cols] = grid(d, view.grid_branch), cw = PANEL / cols, ch = PANEL / rows;
    const gg = clear(this.right.canvas);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const x = view.row[1 + r * cols + c] / view.vmax, [cr, cg, cb] = d.lut.heat[Math.max(0, Math.min(255, Math.floor(x * 256)))];
        gg.fillStyle = `rgb(${cr},${cg},${cb})`;
        gg.fillRect(c * cw, r * ch, cw + 0.5, ch + 0.5);
      }
    }
    if (view.query_cell) strokeRect(gg, d.colors.query, s.patch_col * cw + 1.5, s.patch_row * ch + 1.5, cw - 3, ch - 3);
    const ticks = niceTicks(view.vmax);
    drawColorbar(this.colorbar, d.lut.heat, ticks.map((t) => t / view.vmax), ticks.map((t) => fixed(t, 3)),
                 "attention weight");
  }

  drawRollout(view) {
    const d = this.data, i = this.state.image;
    this.title.textContent = "";
    this.left.title.textContent = "input";
    const g = paintImage(this.left.canvas, d, i);
    drawOutline(g, d, i);
    this.right.title.textContent = view.title;
    this.right.note.style.display = view.missing ? "" : "none";
    this.right.canvas.style.display = view.missing ? "none" : "";
    this.colorbar.style.visibility = view.missing ? "hidden" : "visible";
    if (view.missing) {
      this.right.note.textContent = "Not computed when the explorer was built: a running kernel computes it now; "
        + "without one, choose the predicted class or a class computed in advance.";
      return;
    }
    const map = view.map, n = map.length;
    let gm;
    if (view.signed) {
      const scaled = new Float64Array(n), opacity = new Float64Array(n);
      for (let p = 0; p < n; p++) {
        const x = map[p] / view.limit;
        scaled[p] = (Math.max(-1, Math.min(1, x)) + 1) / 2;
        opacity[p] = 0.9 * Math.sqrt(Math.min(1, Math.abs(x)));
      }
      gm = paintImage(this.right.canvas, d, i, scaled, { lut: d.lut.signed, opacity, grey: true });
      drawColorbar(this.colorbar, d.lut.signed, [0, 0.5, 1], ["-1", "0", "+1"],
                   "signed: value / 99th pct of |value|\n0 = no relevance");
    } else {
      let lo = Infinity, hi = -Infinity;
      for (const v of map) { if (v < lo) lo = v; if (v > hi) hi = v; }
      const scaled = Float64Array.from(map, (v) => (hi > lo ? (v - lo) / (hi - lo) : 0));
      gm = paintImage(this.right.canvas, d, i, scaled, { lut: d.lut.heat, alpha: 0.6 });
      drawColorbar(this.colorbar, d.lut.heat, [0, 1], ["min", "max"], "min-max scaled\nper map");
    }
    if (view.lines) drawGridLines(gm, d, view.lines, d.colors.grid[view.lines], 0.6, 0.5);
    drawOutline(gm, d, i);
    const [cy, cx] = view.centre, x = (cx + 0.5) * PANEL / d.W, y = (cy + 0.5) * PANEL / d.H;
    gm.save();
    gm.strokeStyle = d.colors.query; gm.lineWidth = 3;
    gm.beginPath(); gm.moveTo(x - 9, y); gm.lineTo(x + 9, y); gm.moveTo(x, y - 9); gm.lineTo(x, y + 9); gm.stroke();
    gm.restore();
  }

  destroy() {
    for (const [name, listener] of this.listeners) this.model.off(name, listener);
    this.root.remove();
  }
}

const PACKETS = new WeakMap(); // model -> its decoded packet (several views of one widget share it)

async function render({ model, el }) {
  let decoded = PACKETS.get(model);
  if (decoded === undefined) {
    decoded = decodePacket(model.get("_data"));
    PACKETS.set(model, decoded);
  }
  const explorer = new Explorer(model, el, await decoded);
  return () => explorer.destroy();
}

export default { render };
