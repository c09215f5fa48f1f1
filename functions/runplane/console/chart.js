// A bar chart per day as inline SVG: stacked series, a y axis with round steps, a title per bar (read
// out on hover and by screen readers). No library: a chart of days needs nothing more.

import { h, svg } from "./dom.js";

const W = 720;
const H = 220;
const PAD = { left: 64, right: 12, top: 12, bottom: 28 };

function niceMax(value, least) {
  if (value <= least) return least;
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * step).find((m) => m >= value);
}

// days: [{date: "YYYY-MM-DD", ...values}]; series: [{key, label, cls}]; format(value) -> text; least: the
// smallest top of the axis (4 keeps whole numbers whole)
export function barChart({ days, series, format, label, least = 4 }) {
  const totals = days.map((day) => series.reduce((sum, s) => sum + (day[s.key] ?? 0), 0));
  const top = niceMax(Math.max(0, ...totals), least);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(days.length, 1);
  const barW = Math.max(1, Math.min(28, slot * 0.7));
  const y = (value) => PAD.top + plotH - (value / top) * plotH;

  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => svg("g", { class: "tick" },
    svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(top * f), y2: y(top * f) }),
    svg("text", { x: PAD.left - 6, y: y(top * f) + 4, "text-anchor": "end" }, format(top * f))));
  const every = Math.ceil(days.length / 8);
  const bars = days.map((day, i) => {
    const x = PAD.left + i * slot + (slot - barW) / 2;
    let base = 0;
    const parts = series.map((s) => {
      const value = day[s.key] ?? 0;
      const rect = svg("rect", { class: `bar ${s.cls}`, x, width: barW, y: y(base + value), height: Math.max(0, y(base) - y(base + value)) });
      base += value;
      return value ? rect : null;
    });
    const tip = `${day.date}: ${series.map((s) => `${s.label} ${format(day[s.key] ?? 0)}`).join(", ")}`;
    return svg("g", { class: "day", "data-date": day.date }, svg("title", {}, tip),
      svg("rect", { class: "hit", x: PAD.left + i * slot, y: PAD.top, width: slot, height: plotH }), parts,
      i % every === 0 && days.length - i > every / 2 || i === days.length - 1
        ? svg("text", { class: "date", x: x + barW / 2, y: H - 8, "text-anchor": "middle" }, day.date.slice(5))
        : null);
  });
  const total = totals.reduce((a, b) => a + b, 0);
  return h("figure", { class: "chart" },
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${label}: ${format(total)} over ${days.length} days` },
      grid, bars),
    h("figcaption", {}, h("strong", {}, label), " ",
      series.map((s) => h("span", { class: "legend" }, h("span", { class: `swatch ${s.cls}`, "aria-hidden": "true" }), s.label))));
}

// Every day from start to end (YYYY-MM-DD, UTC), with the usage of those that have some.
export function everyDay(start, end, days) {
  const byDate = new Map(days.map((day) => [day.date, day]));
  const filled = [];
  for (let at = new Date(`${start}T00:00:00Z`); at <= new Date(`${end}T00:00:00Z`); at.setUTCDate(at.getUTCDate() + 1)) {
    const date = at.toISOString().slice(0, 10);
    filled.push(byDate.get(date) ?? { date });
  }
  return filled;
}
