// Tasks done over time as an inline SVG: succeeded and failed, from progress.history.

const NS = "http://www.w3.org/2000/svg";
const W = 640;
const H = 220;
const PAD = { left: 48, right: 12, top: 12, bottom: 28 };

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** history: [[ts, succeeded, failed], ...], oldest first. */
export function tasksPlot(history) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "data-test": "plot" });
  svg.append(el("title", {}, "Tasks done over time"));
  if (!history.length) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "no task counts reported yet"));
    return svg;
  }
  const t0 = history[0][0];
  const last = history[history.length - 1][0];
  const t1 = last > t0 ? last : t0 + 1;
  const ymax = Math.max(1, ...history.map((s) => s[1]), ...history.map((s) => s[2]));
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / ymax) * (H - PAD.top - PAD.bottom);
  // axes, with the y range and the time span
  svg.append(el("line", { x1: PAD.left, y1: y(0), x2: W - PAD.right, y2: y(0), class: "axis-line" }));
  svg.append(el("line", { x1: PAD.left, y1: y(0), x2: PAD.left, y2: PAD.top, class: "axis-line" }));
  svg.append(el("text", { x: PAD.left - 6, y: y(ymax) + 4, "text-anchor": "end", class: "axis" }, String(ymax)));
  svg.append(el("text", { x: PAD.left - 6, y: y(0) + 4, "text-anchor": "end", class: "axis" }, "0"));
  const span = last - t0;
  const spanText = span < 10 ? span.toFixed(2) : String(Math.round(span));
  svg.append(el("text", { x: W - PAD.right, y: H - 8, "text-anchor": "end", class: "axis" }, `+${spanText} s`));
  svg.append(el("text", { x: PAD.left, y: H - 8, class: "axis" }, new Date(t0 * 1000).toISOString().slice(11, 19) + "Z"));
  for (const [i, cls, label] of [[1, "ok", "succeeded"], [2, "bad", "failed"]]) {
    const pts = history.map((s) => `${x(s[0]).toFixed(1)},${y(s[i]).toFixed(1)}`).join(" ");
    const line = el("polyline", { points: pts, class: `series ${cls}`, "data-series": label });
    line.append(el("title", {}, `${label}: ${history[history.length - 1][i]}`));
    svg.append(line);
    for (const s of history) svg.append(el("circle", { cx: x(s[0]).toFixed(1), cy: y(s[i]).toFixed(1), r: 2.5, class: `dot ${cls}` }));
  }
  return svg;
}
