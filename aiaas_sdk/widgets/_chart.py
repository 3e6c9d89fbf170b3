"""A live line chart of a run's metrics (anywidget: JupyterLab, Notebook 7, VS Code).

History lives in the ``series`` trait (bounded by the dashboard's
downsampling); new points travel as small ``append`` messages, so a long run
never resends what the browser already has. The browser trims each series to
the same bound.
"""

from __future__ import annotations

import anywidget
import traitlets

_ESM = r"""
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const CAP = 2000;
const NS = "http://www.w3.org/2000/svg";

function trim(points) {
  while (points.length > CAP) {
    const last = points[points.length - 1];
    points = points.filter((_, i) => i % 2 === 0);
    if (points[points.length - 1] !== last) points.push(last);
  }
  return points;
}

function fmt(v) {
  return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : String(+v.toPrecision(4));
}

function render({ model, el }) {
  let data = {};
  let pending = false;
  const root = document.createElement("div");
  root.className = "aiaas-chart";
  const legend = document.createElement("div");
  legend.className = "aiaas-legend";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 640 220");
  svg.setAttribute("preserveAspectRatio", "none");
  root.append(legend, svg);
  el.append(root);

  const shown = (name) => {
    const selected = model.get("selected");
    return selected.length === 0 || selected.includes(name);
  };

  function toggle(name, names) {
    let selected = model.get("selected");
    if (selected.length === 0) selected = names.slice();
    selected = selected.includes(name) ? selected.filter((n) => n !== name) : selected.concat([name]);
    model.set("selected", selected.length === names.length ? [] : selected);
    model.save_changes();
  }

  function draw() {
    pending = false;
    const names = Object.keys(data).sort();
    legend.replaceChildren();
    names.forEach((name, i) => {
      const item = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = shown(name);
      box.onchange = () => toggle(name, names);
      item.style.color = COLORS[i % COLORS.length];
      item.append(box, " " + name);
      legend.append(item);
    });
    svg.replaceChildren();
    const visible = names.filter((n) => shown(n) && data[n].length > 0);
    if (visible.length === 0) {
      const t = document.createElementNS(NS, "text");
      t.setAttribute("x", 320); t.setAttribute("y", 110); t.setAttribute("text-anchor", "middle");
      t.textContent = names.length ? "no metric selected" : "waiting for metrics…";
      svg.append(t);
      return;
    }
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const n of visible) for (const [x, y] of data[n]) {
      if (!Number.isFinite(y)) continue;
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y1 = y0 + 1; y0 = y0 - 1; }
    const L = 56, R = 630, T = 8, B = 196;
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (R - L);
    const sy = (y) => B - ((y - y0) / (y1 - y0)) * (B - T);
    const axis = document.createElementNS(NS, "path");
    axis.setAttribute("d", `M${L},${T} L${L},${B} L${R},${B}`);
    axis.setAttribute("class", "aiaas-axis");
    svg.append(axis);
    for (const [x, y, text, anchor] of [[L - 4, T + 8, fmt(y1), "end"], [L - 4, B, fmt(y0), "end"],
                                         [L, B + 16, fmt(x0), "start"], [R, B + 16, fmt(x1), "end"]]) {
      const t = document.createElementNS(NS, "text");
      t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor);
      t.setAttribute("class", "aiaas-tick");
      t.textContent = text;
      svg.append(t);
    }
    visible.forEach((name) => {
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", data[name].filter(([, y]) => Number.isFinite(y))
        .map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "));
      line.setAttribute("stroke", COLORS[names.indexOf(name) % COLORS.length]);
      line.setAttribute("class", "aiaas-line");
      svg.append(line);
    });
  }

  const schedule = () => {
    if (!pending) { pending = true; requestAnimationFrame(draw); }
  };
  function load() {
    data = {};
    for (const [name, points] of Object.entries(model.get("series"))) data[name] = trim(points.slice());
    schedule();
  }
  model.on("change:series", load);
  model.on("change:selected", schedule);
  model.on("msg:custom", (msg) => {
    if (msg.type !== "append") return;
    for (const [name, points] of Object.entries(msg.points)) data[name] = trim((data[name] || []).concat(points));
    schedule();
  });
  load();
}

export default { render };
"""

_CSS = """
.aiaas-chart svg { width: 100%; height: 220px; overflow: visible; }
.aiaas-legend { display: flex; flex-wrap: wrap; gap: 0.8em; font-size: 12px; margin-bottom: 2px; }
.aiaas-axis { fill: none; stroke: #999; stroke-width: 1; }
.aiaas-line { fill: none; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
.aiaas-tick { font-size: 11px; fill: #666; }
"""


class MetricsChart(anywidget.AnyWidget):  # type: ignore[misc]
    """Line chart of named series; ``selected`` empty means all series are shown."""

    _esm = _ESM
    _css = _CSS
    series = traitlets.Dict().tag(sync=True)
    selected = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def append(self, points: dict[str, list[tuple[float, float]]]) -> None:
        """Send only new points to every open view."""
        if points:
            self.send({"type": "append", "points": {k: [list(p) for p in v] for k, v in points.items()}})
