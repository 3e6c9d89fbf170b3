/**
 * One polling loop shared by the sidebar and the status bar, so the backend
 * sees one request per tick however many views are open.
 *
 * Cadence: every `refreshSeconds` while the panel is visible, every
 * HIDDEN_INTERVAL_MS otherwise (the status bar still wants a count), nothing
 * while the browser tab is hidden, and growing backoff (up to
 * MAX_INTERVAL_MS) while the backend is not connected.
 */

import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { AiaasApi, NotConnectedError } from './api';
import { DeploymentHistory } from './deployment';
import { CounterSample, NotConnected, Overview, requestRate } from './models';

export const HIDDEN_INTERVAL_MS = 15_000;
export const MAX_INTERVAL_MS = 60_000;

export type BackendState =
  | { kind: 'loading' }
  | { kind: 'connected'; overview: Overview; atMs: number }
  | { kind: 'not-connected'; info: NotConnected };

export class BackendModel {
  constructor(readonly api: AiaasApi, refreshSeconds = 2) {
    this._visibleMs = refreshSeconds * 1000;
    this._poll = new Poll({
      auto: true,
      factory: () => this._tick(),
      frequency: { interval: HIDDEN_INTERVAL_MS, backoff: true, max: MAX_INTERVAL_MS },
      name: 'aiaas:overview',
      standby: 'when-hidden'
    });
  }

  get state(): BackendState {
    return this._state;
  }

  get changed(): ISignal<BackendModel, BackendState> {
    return this._changed;
  }

  /** Requests per second of a deployment since the previous tick (null until two ticks). */
  rate(deployment: string): number | null {
    return this._rates.get(deployment) ?? null;
  }

  /** Requests/s and p99 of every listed deployment over the last minutes, for the detail's charts. */
  readonly history = new DeploymentHistory();

  /** The sidebar tells the model when it is shown or hidden. */
  setPanelVisible(visible: boolean): void {
    this._panelVisible = visible;
    this._applyFrequency();
    if (visible) {
      void this.refresh();
    }
  }

  setRefreshSeconds(seconds: number): void {
    this._visibleMs = Math.max(500, seconds * 1000);
    this._applyFrequency();
  }

  /** Poll now (after a cancel, a settings change, or a click on Refresh). */
  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _applyFrequency(): void {
    const interval = this._panelVisible ? this._visibleMs : HIDDEN_INTERVAL_MS;
    this._poll.frequency = { interval, backoff: true, max: Math.max(interval, MAX_INTERVAL_MS) };
  }

  private async _tick(): Promise<void> {
    try {
      const overview = await this.api.overview();
      const atMs = Date.now();
      this._updateRates(overview, atMs);
      this.history.add(overview.deployments, atMs);
      this._set({ kind: 'connected', overview, atMs });
    } catch (error) {
      const info: NotConnected =
        error instanceof NotConnectedError
          ? error.info
          : { connected: false, url: this.api.backendUrl, reason: 'error', error: (error as Error).message };
      this._samples.clear();
      this._rates.clear();
      this._set({ kind: 'not-connected', info });
      // Rejecting makes the Poll back off until the backend answers again.
      throw error;
    }
  }

  private _updateRates(overview: Overview, atMs: number): void {
    const seen = new Map<string, CounterSample>();
    for (const dep of overview.deployments) {
      if (dep.stats) {
        const sample = { requests: dep.stats.requests, atMs };
        this._rates.set(dep.name, requestRate(this._samples.get(dep.name), sample));
        seen.set(dep.name, sample);
      }
    }
    this._samples = seen;
  }

  private _set(state: BackendState): void {
    this._state = state;
    this._changed.emit(state);
  }

  private _poll: Poll;
  private _state: BackendState = { kind: 'loading' };
  private _changed = new Signal<BackendModel, BackendState>(this);
  private _panelVisible = false;
  private _visibleMs: number;
  private _samples = new Map<string, CounterSample>();
  private _rates = new Map<string, number | null>();
}
