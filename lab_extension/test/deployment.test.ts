import { describe, expect, it } from 'vitest';

import {
  DeploymentHistory,
  MAX_POINTS,
  WINDOW_MS,
  detailFigures,
  firingText,
  formatEvent,
  mergeEvents,
  parseEvents,
  sparkline
} from '../src/deployment';
import { DeploymentStats, DeploymentView } from '../src/models';

function dep(name: string, stats: Partial<DeploymentStats> | null): DeploymentView {
  const full: DeploymentStats = {
    requests: 0, errors: 0, rejected: 0, queue_depth: 0, ready_replicas: 1, mean_batch_rows: null,
    p50_ms: null, p95_ms: null, p99_ms: null, batch_sizes: {}, ...stats
  };
  return {
    id: 'dep_1', name, status: 'ready', run_id: 'run_1', replicas: 2, ready_replicas: 1,
    stats: stats === null ? null : full
  };
}

describe('DeploymentHistory', () => {
  it('turns counters into requests per second and keeps p99', () => {
    const h = new DeploymentHistory();
    h.add([dep('a', { requests: 0, p99_ms: 2 })], 1000);
    h.add([dep('a', { requests: 50, p99_ms: 3 })], 1500);
    h.add([dep('a', { requests: 10, p99_ms: 4 })], 2500); // restarted: no rate for this step
    h.add([dep('a', { requests: 40 })], 3500);
    expect(h.rates('a')).toEqual([{ atMs: 1500, value: 100 }, { atMs: 3500, value: 30 }]);
    expect(h.p99('a').map(p => p.value)).toEqual([2, 3, 4]);
  });
  it('is bounded by age and count, and forgets deployments no longer listed', () => {
    const h = new DeploymentHistory();
    for (let i = 0; i < 2000; i++) {
      h.add([dep('a', { requests: i, p99_ms: 1 }), dep('b', { requests: i, p99_ms: 1 })], i * 1000);
    }
    const points = h.p99('a');
    expect(points.length).toBeLessThanOrEqual(MAX_POINTS);
    expect(points[points.length - 1].atMs - points[0].atMs).toBeLessThanOrEqual(WINDOW_MS);
    h.add([dep('a', null)], 2_000_000);
    expect(h.p99('b')).toEqual([]);
    expect(h.p99('a').length).toBeGreaterThan(0); // listed without figures: kept
  });
});

describe('detail', () => {
  it('shows every figure with units, and dashes before the first figures', () => {
    const figures = detailFigures(
      dep('a', { requests: 300, errors: 3, rejected: 2, queue_depth: 5, mean_batch_rows: 3.5, p50_ms: 1.25,
                 p95_ms: 2, p99_ms: 12.5, batch_sizes: { '8': 2, '2': 10 } }),
      42.123
    );
    expect(Object.fromEntries(figures.map(([label, text]) => [label, text]))).toEqual({
      version: 'run_1', replicas: '1/2', 'req/s': '42.12', requests: '300', p50: '1.25 ms', p95: '2 ms',
      p99: '12.5 ms', errors: '3', rejected: '2', queue: '5', batch: '3.5 rows (2×10, 8×2)'
    });
    const empty = Object.fromEntries(detailFigures(dep('a', null), null).map(([label, text]) => [label, text]));
    expect([empty['req/s'], empty.p99, empty.requests, empty.batch]).toEqual(['–', '–', '–', '–']);
  });
  it('names the firing alerts, and nothing when none fires or the backend has no alerts', () => {
    expect(firingText({ ...dep('a', null), alerts_firing: ['p99_ms', 'error_rate', 'custom'] })).toBe(
      'alert: p99 latency, error rate, custom'
    );
    expect(firingText({ ...dep('a', null), alerts_firing: [] })).toBeNull();
    expect(firingText(dep('a', null))).toBeNull();
  });
  it('scales a sparkline into its box', () => {
    expect(sparkline([], 100, 10)).toBe('');
    expect(sparkline([{ atMs: 0, value: 0 }, { atMs: 10, value: 5 }, { atMs: 20, value: 10 }], 100, 10)).toBe(
      '0.0,10.0 50.0,5.0 100.0,0.0'
    );
  });
});

describe('events', () => {
  const ev = (seq: number, kind = 'scaled') => ({ seq, time: 1_700_000_000 + seq, kind, message: `m${seq}` });
  it('reads a list or a page and drops what is not an event', () => {
    expect(parseEvents([ev(1), { nope: 1 }])).toEqual([ev(1)]);
    expect(parseEvents({ data: [ev(2)] })).toEqual([ev(2)]);
    expect(parseEvents(null)).toEqual([]);
  });
  it('merges by seq, in order, bounded', () => {
    const merged = mergeEvents([ev(1), ev(2)], [ev(4), ev(2), ev(3)], 3);
    expect(merged.map(e => e.seq)).toEqual([2, 3, 4]);
  });
  it('formats a known kind readably', () => {
    expect(formatEvent(ev(5, 'alert_raised'))).toBe('22:13:25 alert raised: m5');
  });
});
