/**
 * A small line chart drawn by hand on a <canvas>, for the dashboard panels.
 *
 * Time on the x axis, a linear y axis from zero with round ticks, one line
 * per series (a `null` value leaves a gap). It is sharp on HiDPI screens: the
 * backing store is sized to the element's CSS size times devicePixelRatio and
 * redrawn whenever the element resizes. Colours come from CSS custom
 * properties, so the chart follows the light and dark themes of app.css.
 *
 *     const chart = new LineChart(canvas, {
 *       series: [{ label: "p50", color: "--series-1" }, { label: "p99", color: "--series-3", dash: [2, 3] }],
 *       formatY: (value, step) => `${value} ms`,
 *       emptyText: "No requests yet",
 *       minSpanMs: 300_000, // the x axis covers at least this much time
 *     });
 *     chart.update({ x: [timesInMs], y: [[p50s], [p99s]] });
 *     chart.destroy();
 */

const X_STEPS_MS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200].map((s) => s * 1000);
const FONT_PX = 12;

const axisClock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const axisClockSeconds = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

/** A step of 1, 2 or 5 times a power of ten, near `span / count`. */
export function niceStep(span, count) {
  const rough = span / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const normalized = rough / magnitude;
  const nice = normalized <= 1 ? 1 : normalized <= 2 ? 2 : normalized <= 5 ? 5 : 10;
  return nice * magnitude;
}

/** Decimals that show a multiple of `step` exactly. */
export function decimalsForStep(step) {
  return Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
}

export class LineChart {
  constructor(canvas, { series, formatY = (value) => String(value), emptyText = "No data yet", minSpanMs = 60_000 }) {
    this.canvas = canvas;
    this.minSpanMs = minSpanMs;
    this.series = series;
    this.formatY = formatY;
    this.emptyText = emptyText;
    this.data = { x: [], y: series.map(() => []) };
    this.redraw = () => this.draw();
    this.resizeObserver = new ResizeObserver(this.redraw);
    this.resizeObserver.observe(canvas);
    this.darkScheme = window.matchMedia("(prefers-color-scheme: dark)");
    this.darkScheme.addEventListener("change", this.redraw);
  }

  /** Replaces the data: `x` in epoch milliseconds, `y[i]` aligned with `x` for series i. */
  update(data) {
    this.data = data;
    this.draw();
  }

  destroy() {
    this.resizeObserver.disconnect();
    this.darkScheme.removeEventListener("change", this.redraw);
  }

  draw() {
    const { canvas } = this;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (width === 0 || height === 0) return;
    const ratio = window.devicePixelRatio || 1;
    const backingWidth = Math.round(width * ratio);
    const backingHeight = Math.round(height * ratio);
    if (canvas.width !== backingWidth || canvas.height !== backingHeight) {
      canvas.width = backingWidth;
      canvas.height = backingHeight;
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);

    const style = getComputedStyle(canvas);
    const color = (name) => style.getPropertyValue(name).trim() || "gray";
    const muted = color("--muted");
    g.font = `${FONT_PX}px ${style.fontFamily}`;
    g.textBaseline = "middle";

    const { x, y } = this.data;
    const values = y.flat().filter((v) => typeof v === "number" && Number.isFinite(v));
    const yMax = Math.max(0, ...values);
    const yStep = niceStep(yMax > 0 ? yMax : 1, 4);
    // A little headroom, so that the highest line does not run along the top.
    const yTop = Math.max(yStep, Math.ceil((yMax * 1.05) / yStep) * yStep);
    const yTicks = [];
    for (let tick = 0; tick <= yTop + yStep / 2; tick += yStep) yTicks.push(tick);
    const yLabels = yTicks.map((tick) => this.formatY(tick, yStep));

    const plot = {
      left: Math.ceil(Math.max(...yLabels.map((label) => g.measureText(label).width))) + 10,
      top: FONT_PX,
      right: width - 12,
      bottom: height - FONT_PX * 2 - 4,
    };
    if (plot.right - plot.left < 40 || plot.bottom - plot.top < 40) return;

    const xEnd = x.length ? x[x.length - 1] : Date.now();
    const xStart = Math.min(x.length ? x[0] : xEnd, xEnd - this.minSpanMs);
    const px = (t) => plot.left + ((t - xStart) / (xEnd - xStart)) * (plot.right - plot.left);
    const py = (v) => plot.bottom - (v / yTop) * (plot.bottom - plot.top);

    // Horizontal grid and y labels.
    g.lineWidth = 1;
    g.textAlign = "right";
    yTicks.forEach((tick, index) => {
      const lineY = Math.round(py(tick)) + 0.5;
      g.strokeStyle = color("--grid");
      g.beginPath();
      g.moveTo(plot.left, lineY);
      g.lineTo(plot.right, lineY);
      g.stroke();
      g.fillStyle = muted;
      g.fillText(yLabels[index], plot.left - 6, lineY);
    });

    // X ticks at round times, as many as fit.
    const maxTicks = Math.max(2, Math.floor((plot.right - plot.left) / 110));
    const xStep = X_STEPS_MS.find((step) => (xEnd - xStart) / step <= maxTicks) ?? X_STEPS_MS[X_STEPS_MS.length - 1];
    const clock = xStep < 60_000 ? axisClockSeconds : axisClock;
    g.textAlign = "center";
    g.textBaseline = "top";
    g.strokeStyle = muted;
    for (let tick = Math.ceil(xStart / xStep) * xStep; tick <= xEnd; tick += xStep) {
      const tickX = Math.round(px(tick)) + 0.5;
      g.beginPath();
      g.moveTo(tickX, plot.bottom);
      g.lineTo(tickX, plot.bottom + 4);
      g.stroke();
      g.fillStyle = muted;
      g.fillText(clock.format(new Date(tick)), tickX, plot.bottom + 7);
    }

    // Axes.
    g.beginPath();
    g.moveTo(plot.left + 0.5, plot.top);
    g.lineTo(plot.left + 0.5, plot.bottom + 0.5);
    g.lineTo(plot.right, plot.bottom + 0.5);
    g.stroke();

    if (values.length === 0) {
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.fillStyle = muted;
      g.fillText(this.emptyText, (plot.left + plot.right) / 2, (plot.top + plot.bottom) / 2);
      return;
    }

    // Lines; an isolated point (a gap on both sides) is drawn as a dot.
    g.save();
    g.beginPath();
    g.rect(plot.left, plot.top - 2, plot.right - plot.left + 2, plot.bottom - plot.top + 2);
    g.clip();
    g.lineJoin = "round";
    g.lineCap = "round";
    this.series.forEach((series, index) => {
      const points = y[index] ?? [];
      const stroke = color(series.color);
      g.strokeStyle = stroke;
      g.fillStyle = stroke;
      g.lineWidth = series.width ?? 2;
      g.setLineDash(series.dash ?? []);
      g.beginPath();
      let drawing = false;
      points.forEach((value, at) => {
        const present = typeof value === "number" && Number.isFinite(value);
        if (!present) {
          drawing = false;
          return;
        }
        const pointX = px(x[at]);
        const pointY = py(value);
        if (drawing) {
          g.lineTo(pointX, pointY);
        } else {
          g.moveTo(pointX, pointY);
          const next = points[at + 1];
          if (typeof next !== "number" || !Number.isFinite(next)) {
            g.fillRect(pointX - 2, pointY - 2, 4, 4);
          }
        }
        drawing = true;
      });
      g.stroke();
    });
    g.restore();
  }
}
