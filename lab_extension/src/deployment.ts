/**
 * What a deployment's detail shows, as pure functions: a bounded history of
 * the figures the overview polls (requests/s from two counter samples, p99
 * latency), the headline figures as text, and the events of the alerts API
 * when the backend has it. No DOM here, so vitest covers all of it.
 */

import { DeploymentView, formatNumber, requestRate } from './models';

/** History kept per deployment: five minutes, and never more than this many points. */
export const WINDOW_MS = 5 * 60_000;
export const MAX_POINTS = 600;

export interface Point {
  atMs: number;
  value: number;
}

interface Sample {
  atMs: number;
  requests: number;
  rps: number | null;
  p99: number | null;
}

/** Samples of every deployment seen in the overview; deployments no longer listed are forgotten. */
export class DeploymentHistory {
  add(deployments: DeploymentView[], atMs: number): void {
    const seen = new Set<string>();
    for (const dep of deployments) {
      seen.add(dep.name);
      if (!dep.stats) {
        continue;
      }
      const samples = this._samples.get(dep.name) ?? [];
      const last = samples[samples.length - 1];
      const rps = requestRate(last, { requests: dep.stats.requests, atMs });
      samples.push({ atMs, requests: dep.stats.requests, rps, p99: dep.stats.p99_ms ?? null });
      while (samples.length > MAX_POINTS || (samples.length && atMs - samples[0].atMs > WINDOW_MS)) {
        samples.shift();
      }
      this._samples.set(dep.name, samples);
    }
    for (const name of [...this._samples.keys()]) {
      if (!seen.has(name)) {
        this._samples.delete(name);
      }
    }
  }

  /** Requests per second over the window (gaps where no rate could be computed are left out). */
  rates(name: string): Point[] {
    return (this._samples.get(name) ?? []).flatMap(s => (s.rps === null ? [] : [{ atMs: s.atMs, value: s.rps }]));
  }

  /** p99 latency in milliseconds over the window. */
  p99(name: string): Point[] {
    return (this._samples.get(name) ?? []).flatMap(s => (s.p99 === null ? [] : [{ atMs: s.atMs, value: s.p99 }]));
  }

  private _samples = new Map<string, Sample[]>();
}

/** An SVG polyline's `points` for `points` scaled into a width x height box (y grows downwards). */
export function sparkline(points: Point[], width: number, height: number): string {
  if (points.length === 0) {
    return '';
  }
  const x0 = points[0].atMs;
  const x1 = Math.max(points[points.length - 1].atMs, x0 + 1);
  const top = Math.max(...points.map(p => p.value), 0);
  const y1 = top > 0 ? top : 1;
  return points
    .map(p => `${(((p.atMs - x0) / (x1 - x0)) * width).toFixed(1)},${(height - (p.value / y1) * height).toFixed(1)}`)
    .join(' ');
}

function ms(value: number | null | undefined): string {
  return value === null || value === undefined ? '–' : `${formatNumber(value)} ms`;
}

/** The detail's headline figures, in display order, as [label, text, css suffix]. */
export function detailFigures(dep: DeploymentView, rate: number | null): [string, string, string][] {
  const s = dep.stats;
  const sizes = Object.entries(s?.batch_sizes ?? {})
    .map(([rows, n]) => [Number(rows), n] as const)
    .sort((a, b) => a[0] - b[0])
    .slice(-6)
    .map(([rows, n]) => `${rows}×${n}`)
    .join(', ');
  const batch = s?.mean_batch_rows === null || s?.mean_batch_rows === undefined ? '–' : `${formatNumber(s.mean_batch_rows)} rows`;
  return [
    ['version', dep.run_id, 'version'],
    ['replicas', `${dep.ready_replicas}/${dep.replicas}`, 'replicas'],
    ['req/s', rate === null ? '–' : formatNumber(rate), 'rate'],
    ['requests', s ? String(s.requests) : '–', 'requests'],
    ['p50', ms(s?.p50_ms), 'p50'],
    ['p95', ms(s?.p95_ms), 'p95'],
    ['p99', ms(s?.p99_ms), 'p99'],
    ['errors', s ? String(s.errors) : '–', 'errors'],
    ['rejected', s ? String(s.rejected) : '–', 'rejected'],
    ['queue', s ? String(s.queue_depth) : '–', 'queue'],
    ['batch', sizes ? `${batch} (${sizes})` : batch, 'batch']
  ];
}

const RULE_LABELS: Record<string, string> = {
  p99_ms: 'p99 latency',
  p95_ms: 'p95 latency',
  error_rate: 'error rate',
  queue_saturation: 'queue saturation',
  drift: 'input drift'
};

/** "alert: p99 latency, error rate" for the rules firing now, or null when none is. */
export function firingText(dep: DeploymentView): string | null {
  const firing = dep.alerts_firing ?? [];
  return firing.length ? `alert: ${firing.map(rule => RULE_LABELS[rule] ?? rule).join(', ')}` : null;
}

/** One entry of GET /v1/deployments/{name}/events (the alerts API; absent on older backends). */
export interface DeploymentEvent {
  seq: number;
  time: number;
  kind: string;
  message?: string | null;
}

const EVENT_LABELS: Record<string, string> = {
  alert_raised: 'alert raised',
  alert_resolved: 'alert resolved',
  replica_restarted: 'replica restarted',
  updated: 'updated',
  rolled_back: 'rolled back',
  scaled: 'scaled'
};

/** The events in an answer, whether it is a bare list or a `{data: [...]}` page. */
export function parseEvents(body: unknown): DeploymentEvent[] {
  const list = Array.isArray(body) ? body : (body as { data?: unknown })?.data;
  if (!Array.isArray(list)) {
    return [];
  }
  return list.filter(e => typeof e?.seq === 'number' && typeof e?.kind === 'string') as DeploymentEvent[];
}

/** Merge `fresh` into `known` by seq, newest last, at most `keep`. */
export function mergeEvents(known: DeploymentEvent[], fresh: DeploymentEvent[], keep = 20): DeploymentEvent[] {
  const bySeq = new Map(known.map(e => [e.seq, e]));
  fresh.forEach(e => bySeq.set(e.seq, e));
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq).slice(-keep);
}

export function formatEvent(event: DeploymentEvent): string {
  const when = new Date(event.time * 1000).toISOString().slice(11, 19);
  const label = EVENT_LABELS[event.kind] ?? event.kind;
  return `${when} ${label}${event.message ? `: ${event.message}` : ''}`;
}
