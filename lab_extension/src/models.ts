/**
 * Typed models of what the panel reads from the aiaas backend (through the
 * Jupyter server's /aiaas/ routes), and the pure functions that turn them
 * into what a row shows. The field names are checked against the backend's
 * OpenAPI schema by test/models.test.ts, so a renamed field fails a test
 * instead of silently blanking a column.
 */

export type RunStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** RunProgress in the OpenAPI schema. */
export interface RunProgress {
  step: number;
  total_steps?: number | null;
  epoch?: number | null;
  max_epochs?: number | null;
}

/** RunPublic in the OpenAPI schema (the fields the panel uses). */
export interface RunPublic {
  id: string;
  name: string;
  status: RunStatus;
  created_at: string;
  started_at?: string | null;
  finished_at?: string | null;
  cancel_requested?: boolean;
  error?: string | null;
  traceback?: string | null;
  final_metrics?: Record<string, number>;
  progress?: RunProgress | null;
  latest_metrics?: Record<string, number>;
  /** The dataset versions the run reads, as NAME:VERSION. */
  datasets?: string[];
}

/** DeploymentStats in the OpenAPI schema (the fields the panel uses). */
export interface DeploymentStats {
  requests: number;
  errors: number;
  rejected: number;
  queue_depth: number;
  ready_replicas: number;
  mean_batch_rows?: number | null;
  p50_ms?: number | null;
  p95_ms?: number | null;
  p99_ms?: number | null;
  batch_sizes?: Record<string, number>;
}

/** OptimizationReport in the OpenAPI schema: what deploy(optimize=...) measured. */
export interface OptimizationReport {
  method: string;
  speedup: number;
  max_abs_deviation: number;
  tolerance: number;
}

export type DeploymentStatus = 'starting' | 'ready' | 'updating' | 'failed' | 'stopped';

/** DeploymentPublic in the OpenAPI schema (the fields the panel uses). */
export interface DeploymentPublic {
  id: string;
  name: string;
  status: DeploymentStatus;
  run_id: string;
  replicas: number;
  ready_replicas: number;
  error?: string | null;
  optimization?: OptimizationReport | null;
  /** SLO rules breached now (dep.set_alerts); absent on backends without alerts. */
  alerts_firing?: string[];
}

/** A deployment as /aiaas/overview lists it: with its counters (null if they could not be read). */
export interface DeploymentView extends DeploymentPublic {
  stats: DeploymentStats | null;
}

/** LogLine and LogsPage in the OpenAPI schema. */
export interface LogLine {
  seq: number;
  time: number;
  line: string;
}

export interface LogsPage {
  data: LogLine[];
  next_after: number;
}

/** What GET /aiaas/overview answers when the backend can be used. */
export interface Overview {
  connected: true;
  url: string;
  active_runs: number;
  runs: RunPublic[];
  runs_total: number;
  deployments: DeploymentView[];
}

/** What every /aiaas/ route answers (status 503) when it cannot use the backend. */
export interface NotConnected {
  connected: false;
  url: string;
  reason: string;
  error: string;
}

// Every field of each interface, exactly (the compiler refuses a missing or an extra one), so
// the schema test covers all of them.
const RUN_FIELDS: Record<keyof RunPublic, true> = {
  id: true, name: true, status: true, created_at: true, started_at: true, finished_at: true,
  cancel_requested: true, error: true, traceback: true, final_metrics: true, progress: true, latest_metrics: true,
  datasets: true
};
const PROGRESS_FIELDS: Record<keyof RunProgress, true> = { step: true, total_steps: true, epoch: true, max_epochs: true };
const DEPLOYMENT_FIELDS: Record<keyof DeploymentPublic, true> = {
  id: true, name: true, status: true, run_id: true, replicas: true, ready_replicas: true, error: true,
  optimization: true, alerts_firing: true
};
const OPTIMIZATION_FIELDS: Record<keyof OptimizationReport, true> = {
  method: true, speedup: true, max_abs_deviation: true, tolerance: true
};
const STATS_FIELDS: Record<keyof DeploymentStats, true> = {
  requests: true, errors: true, rejected: true, queue_depth: true, ready_replicas: true, mean_batch_rows: true,
  p50_ms: true, p95_ms: true, p99_ms: true, batch_sizes: true
};
const LOG_LINE_FIELDS: Record<keyof LogLine, true> = { seq: true, time: true, line: true };
const LOGS_PAGE_FIELDS: Record<keyof LogsPage, true> = { data: true, next_after: true };

/** The fields of each model by its OpenAPI schema name, for the schema test. */
export const MODEL_FIELDS: Record<string, readonly string[]> = Object.fromEntries(
  Object.entries({
    RunPublic: RUN_FIELDS,
    RunProgress: PROGRESS_FIELDS,
    DeploymentPublic: DEPLOYMENT_FIELDS,
    DeploymentStats: STATS_FIELDS,
    OptimizationReport: OPTIMIZATION_FIELDS,
    LogLine: LOG_LINE_FIELDS,
    LogsPage: LOGS_PAGE_FIELDS
  }).map(([model, fields]) => [model, Object.keys(fields)])
);

export const RUN_STATUSES: readonly RunStatus[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
export const DEPLOYMENT_STATUSES: readonly DeploymentStatus[] = ['starting', 'ready', 'updating', 'failed', 'stopped'];

export function isActive(run: RunPublic): boolean {
  return run.status === 'queued' || run.status === 'running';
}

/**
 * The backend stores UTC; SQLite hands datetimes back without a zone, and
 * JavaScript would read those as local time.
 */
export function parseTime(value: string | null | undefined): number | null {
  if (!value) {
    return null;
  }
  const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(value) ? value : `${value}Z`;
  const ms = Date.parse(zoned);
  return Number.isNaN(ms) ? null : ms;
}

/** Seconds since the run started (until it finished); null before it starts. */
export function elapsedSeconds(run: RunPublic, nowMs: number): number | null {
  const start = parseTime(run.started_at);
  if (start === null) {
    return null;
  }
  const end = parseTime(run.finished_at) ?? nowMs;
  return Math.max(0, (end - start) / 1000);
}

export function formatDuration(seconds: number | null): string {
  if (seconds === null) {
    return '';
  }
  const s = Math.floor(seconds);
  if (s < 60) {
    return `${s}s`;
  }
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  }
  return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
}

/** 0..1 when known: a succeeded run is done, a running one knows its step count once Lightning does. */
export function progressFraction(run: RunPublic): number | null {
  if (run.status === 'succeeded') {
    return 1;
  }
  const p = run.progress;
  if (!p || !p.total_steps) {
    return null;
  }
  return Math.min(1, Math.max(0, p.step / p.total_steps));
}

// A user's own names come first; Lightning's conventional ones after.
const LOSS_PREFERENCE = ['train_loss', 'loss', 'train_loss_step', 'train_loss_epoch', 'val_loss'];

/** The loss a row shows: live values while running, the final ones after. */
export function latestLoss(run: RunPublic): { name: string; value: number } | null {
  const live = run.latest_metrics ?? {};
  const metrics = Object.keys(live).length ? live : run.final_metrics ?? {};
  const name = LOSS_PREFERENCE.find(n => n in metrics) ?? Object.keys(metrics).sort().find(n => n.includes('loss'));
  return name === undefined ? null : { name, value: metrics[name] };
}

export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) {
    return String(value);
  }
  const abs = Math.abs(value);
  return abs !== 0 && (abs < 1e-3 || abs >= 1e5) ? value.toExponential(2) : String(Number(value.toPrecision(4)));
}

/** A request counter seen at a moment. */
export interface CounterSample {
  requests: number;
  atMs: number;
}

/** Requests per second between two samples; null when unknown or the counter restarted. */
export function requestRate(previous: CounterSample | undefined, current: CounterSample): number | null {
  if (!previous || current.atMs <= previous.atMs || current.requests < previous.requests) {
    return null;
  }
  return ((current.requests - previous.requests) * 1000) / (current.atMs - previous.atMs);
}

/** The first line of an error, for a one-line display; the rest is in the logs tab. */
/** "int8 · 2.1× faster · max deviation 0.0031": what an optimised deployment measured. */
export function formatOptimization(report: OptimizationReport): string {
  const speedup = report.speedup >= 10 ? report.speedup.toFixed(0) : report.speedup.toFixed(2);
  return `${report.method} · ${speedup}× faster · max deviation ${report.max_abs_deviation.toPrecision(2)}`;
}

export function oneLine(text: string | null | undefined, max = 200): string {
  const first = (text ?? '').trim().split('\n')[0];
  return first.length > max ? `${first.slice(0, max - 1)}…` : first;
}

function fail(what: string): never {
  throw new Error(`the Jupyter server's /aiaas/overview answer is malformed (${what}); update the aiaas package`);
}

/** Checks the shape the panel relies on, so a mismatch is one clear error and not a blank panel. */
export function parseOverview(body: unknown): Overview | NotConnected {
  if (typeof body !== 'object' || body === null) {
    fail('not an object');
  }
  const o = body as Record<string, unknown>;
  if (o.connected === false) {
    return {
      connected: false,
      url: String(o.url ?? ''),
      reason: String(o.reason ?? 'unknown'),
      error: String(o.error ?? 'not connected')
    };
  }
  if (o.connected !== true || !Array.isArray(o.runs) || !Array.isArray(o.deployments)) {
    fail('no runs or deployments');
  }
  for (const run of o.runs as Record<string, unknown>[]) {
    if (typeof run?.id !== 'string' || !RUN_STATUSES.includes(run.status as RunStatus)) {
      fail(`a run without id or with status ${JSON.stringify(run?.status)}`);
    }
  }
  return o as unknown as Overview;
}
