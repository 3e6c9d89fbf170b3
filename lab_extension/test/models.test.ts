import { describe, expect, it } from 'vitest';

import {
  RunPublic,
  elapsedSeconds,
  formatDuration,
  formatNumber,
  formatOptimization,
  latestLoss,
  oneLine,
  parseOverview,
  parseTime,
  progressFraction,
  requestRate
} from '../src/models';

function run(fields: Partial<RunPublic>): RunPublic {
  return { id: 'run_1', name: 'digits', status: 'running', created_at: '2026-01-01T00:00:00Z', ...fields };
}

describe('parseTime', () => {
  it('reads a zone-less timestamp as UTC, as the backend stores it', () => {
    expect(parseTime('2026-01-01T00:00:10')).toBe(Date.UTC(2026, 0, 1, 0, 0, 10));
    expect(parseTime('2026-01-01T00:00:10.500000')).toBe(Date.UTC(2026, 0, 1, 0, 0, 10, 500));
  });
  it('keeps an explicit zone', () => {
    expect(parseTime('2026-01-01T01:00:00+01:00')).toBe(Date.UTC(2026, 0, 1));
    expect(parseTime('2026-01-01T00:00:00Z')).toBe(Date.UTC(2026, 0, 1));
  });
  it('is null for nothing or garbage', () => {
    expect(parseTime(null)).toBeNull();
    expect(parseTime('yesterday')).toBeNull();
  });
});

describe('elapsed', () => {
  const start = '2026-01-01T00:00:00Z';
  it('counts to now while running and to the end once finished', () => {
    expect(elapsedSeconds(run({ started_at: start }), Date.UTC(2026, 0, 1, 0, 1, 5))).toBe(65);
    expect(elapsedSeconds(run({ started_at: start, finished_at: '2026-01-01T00:00:30Z' }), Date.now())).toBe(30);
    expect(elapsedSeconds(run({ status: 'queued' }), Date.now())).toBeNull();
  });
  it('formats seconds, minutes and hours', () => {
    expect(formatDuration(null)).toBe('');
    expect(formatDuration(9.7)).toBe('9s');
    expect(formatDuration(65)).toBe('1m 05s');
    expect(formatDuration(3 * 3600 + 4 * 60 + 5)).toBe('3h 04m');
  });
});

describe('progress', () => {
  it('is a fraction of the known total, and done once succeeded', () => {
    expect(progressFraction(run({ progress: { step: 12, total_steps: 48 } }))).toBe(0.25);
    expect(progressFraction(run({ status: 'succeeded' }))).toBe(1);
  });
  it('is unknown without a total or before the first progress event', () => {
    expect(progressFraction(run({ progress: { step: 3, total_steps: null } }))).toBeNull();
    expect(progressFraction(run({}))).toBeNull();
    expect(progressFraction(run({ status: 'failed', progress: null }))).toBeNull();
  });
  it('never leaves 0..1', () => {
    expect(progressFraction(run({ progress: { step: 60, total_steps: 48 } }))).toBe(1);
  });
});

describe('latestLoss', () => {
  it('prefers live values while running, train_loss first', () => {
    const r = run({ latest_metrics: { val_loss: 2, train_loss: 1 }, final_metrics: { train_loss: 9 } });
    expect(latestLoss(r)).toEqual({ name: 'train_loss', value: 1 });
  });
  it('uses the final metrics after the run and any *loss* name', () => {
    expect(latestLoss(run({ status: 'succeeded', final_metrics: { acc: 0.9, my_loss: 0.5 } }))).toEqual({
      name: 'my_loss',
      value: 0.5
    });
    expect(latestLoss(run({ final_metrics: { acc: 0.9 } }))).toBeNull();
  });
});

describe('numbers and text', () => {
  it('formats losses readably', () => {
    expect(formatNumber(0.123456)).toBe('0.1235');
    expect(formatNumber(12)).toBe('12');
    expect(formatNumber(0.0000123)).toBe('1.23e-5');
    expect(formatNumber(Number.NaN)).toBe('NaN');
  });
  it('computes requests per second and refuses a counter that restarted', () => {
    expect(requestRate(undefined, { requests: 10, atMs: 1000 })).toBeNull();
    expect(requestRate({ requests: 10, atMs: 1000 }, { requests: 30, atMs: 3000 })).toBe(10);
    expect(requestRate({ requests: 30, atMs: 1000 }, { requests: 5, atMs: 3000 })).toBeNull();
  });
  it('shows one line of an error', () => {
    expect(oneLine('ValueError: boom\n  at line 3')).toBe('ValueError: boom');
    expect(formatOptimization({ method: 'int8', speedup: 2.345, max_abs_deviation: 0.003141, tolerance: 0.05 }))
      .toBe('int8 · 2.35× faster · max deviation 0.0031');
    expect(formatOptimization({ method: 'onnx', speedup: 12.3, max_abs_deviation: 0, tolerance: 1e-4 }))
      .toBe('onnx · 12× faster · max deviation 0.0');
    expect(oneLine('x'.repeat(300), 10)).toHaveLength(10);
    expect(oneLine(null)).toBe('');
  });
});

describe('parseOverview', () => {
  it('passes a connected answer through', () => {
    const body = { connected: true, url: 'http://b', active_runs: 1, runs: [run({})], runs_total: 1, deployments: [] };
    expect(parseOverview(body)).toBe(body);
  });
  it('turns a not-connected answer into its reason', () => {
    expect(parseOverview({ connected: false, url: 'http://x', reason: 'no_key_for_url', error: 'no key for http://x' }))
      .toEqual({ connected: false, url: 'http://x', reason: 'no_key_for_url', error: 'no key for http://x' });
  });
  it('refuses a malformed answer with one clear line', () => {
    expect(() => parseOverview('<html>')).toThrow(/malformed \(not an object\)/);
    expect(() => parseOverview({ connected: true, runs: [{ id: 'r', status: 'exploded' }], deployments: [] })).toThrow(
      /status "exploded"/
    );
  });
});
