/**
 * The left-sidebar panel: this user's runs and deployments, live while shown.
 *
 * Rows are keyed by id and updated in place, so a button does not vanish
 * under the pointer when a poll lands; clicks are handled once on the
 * panel (by `data-action`) for the same reason. A click on a deployment's
 * name opens its detail (detail.ts) under the row; a second click closes it.
 */

import { Widget } from '@lumino/widgets';

import { DeploymentEvent, firingText, mergeEvents, parseEvents } from './deployment';
import { deploymentDetail } from './detail';
import { BackendModel, BackendState } from './poller';
import {
  DeploymentView,
  RunPublic,
  elapsedSeconds,
  formatDuration,
  formatNumber,
  formatOptimization,
  isActive,
  latestLoss,
  oneLine,
  progressFraction
} from './models';

export interface IPanelActions {
  cancel(run: RunPublic): void;
  openLogs(run: RunPublic): void;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className: string, text = ''): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

export class AiaasPanel extends Widget {
  constructor(private readonly model: BackendModel, private readonly actions: IPanelActions) {
    super();
    this.id = 'aiaas-panel';
    this.addClass('aiaas-Panel');
    this.title.caption = 'aiaas: runs and deployments';
    this._banner = el('div', 'aiaas-Panel-banner', 'Connecting to the aiaas backend…');
    this._runs = el('div', 'aiaas-Panel-runs');
    this._deployments = el('div', 'aiaas-Panel-deployments');
    this.node.append(
      this._banner,
      el('h3', 'aiaas-Panel-heading', 'Runs'),
      this._runs,
      el('h3', 'aiaas-Panel-heading', 'Deployments'),
      this._deployments
    );
    this.node.addEventListener('click', this._onClick);
    model.changed.connect((_, state) => this._render(state));
  }

  protected onAfterShow(): void {
    this.model.setPanelVisible(true);
  }

  protected onAfterHide(): void {
    this.model.setPanelVisible(false);
  }

  private _onClick = (event: MouseEvent): void => {
    const button = (event.target as HTMLElement).closest<HTMLElement>('[data-action]');
    if (button?.dataset.action === 'detail') {
      const name = button.dataset.deployment ?? '';
      this._selected = this._selected === name ? null : name;
      this._rerender();
      return;
    }
    const run = this._byId.get(button?.closest<HTMLElement>('[data-run-id]')?.dataset.runId ?? '');
    if (!button || !run) {
      return;
    }
    if (button.dataset.action === 'cancel') {
      this.actions.cancel(run);
    } else if (button.dataset.action === 'logs') {
      this.actions.openLogs(run);
    }
  };

  private _render(state: BackendState): void {
    this.node.dataset.state = state.kind;
    if (state.kind === 'not-connected') {
      this._banner.textContent = `Not connected: ${oneLine(state.info.error, 400)}`;
      this._banner.hidden = false;
      return;
    }
    if (state.kind !== 'connected') {
      return;
    }
    this._banner.hidden = true;
    const { runs, deployments } = state.overview;
    this._byId = new Map(runs.map(r => [r.id, r]));
    this._sync(this._runs, runs, r => r.id, r => this._runRow(r, state.atMs), 'No runs yet: client.train(...) in a notebook.');
    this._sync(this._deployments, deployments, d => d.name, d => this._deploymentRow(d), 'No deployments: run.deploy("name").');
    if (this._selected !== null && deployments.some(d => d.name === this._selected)) {
      void this._fetchEvents(this._selected);
    }
  }

  private _rerender(): void {
    if (this.model.state.kind === 'connected') {
      this._render(this.model.state);
    }
  }

  /** New events of the open deployment, when the backend has the events API (a 404 says it has not). */
  private async _fetchEvents(name: string): Promise<void> {
    if (this._eventsSupported === false || this._fetching) {
      return;
    }
    this._fetching = true;
    const known = this._events.get(name) ?? [];
    try {
      const fresh = parseEvents(await this.model.api.deploymentEvents(name, known.length ? known[known.length - 1].seq : 0));
      this._eventsSupported = true;
      if (fresh.length || !this._events.has(name)) {
        this._events.set(name, mergeEvents(known, fresh));
        this._rerender();
      }
    } catch (error) {
      if ((error as Error).message.startsWith('404')) {
        this._eventsSupported = this._eventsSupported ?? false;
      }
    } finally {
      this._fetching = false;
    }
  }

  /** Replace `container`'s rows with `items`, reusing the row element of each key. */
  private _sync<T>(container: HTMLElement, items: T[], key: (item: T) => string, fill: (item: T) => HTMLElement[],
                   empty: string): void {
    const old = new Map<string, HTMLElement>();
    container.querySelectorAll<HTMLElement>(':scope > [data-key]').forEach(row => old.set(row.dataset.key!, row));
    const rows = items.map(item => {
      const row = old.get(key(item)) ?? el('div', 'aiaas-Row');
      row.dataset.key = key(item);
      // Unchanged parts keep their element: a button being clicked must not be swapped mid-click.
      const current = Array.from(row.children);
      const next = fill(item).map((node, i) => (current[i]?.isEqualNode(node) ? current[i] : node));
      if (next.length !== current.length || next.some((node, i) => node !== current[i])) {
        row.replaceChildren(...next);
      }
      return row;
    });
    container.replaceChildren(...(rows.length ? rows : [el('div', 'aiaas-Panel-empty', empty)]));
  }

  private _runRow(run: RunPublic, nowMs: number): HTMLElement[] {
    const head = el('div', 'aiaas-Row-head');
    head.dataset.runId = run.id;
    head.dataset.status = run.status;
    head.append(
      el('span', 'aiaas-Row-name', run.name),
      el('span', `aiaas-Status aiaas-Status-${run.status}`, run.cancel_requested && isActive(run) ? 'cancelling' : run.status)
    );
    const fraction = progressFraction(run);
    const bar = el('div', 'aiaas-Progress');
    const fill = el('div', 'aiaas-Progress-fill');
    fill.style.width = `${Math.round((fraction ?? 0) * 100)}%`;
    bar.append(fill);
    bar.title = fraction === null ? 'progress not known yet' : `${Math.round(fraction * 100)}%`;
    const loss = latestLoss(run);
    const facts = el('div', 'aiaas-Row-facts');
    facts.append(
      el('span', 'aiaas-Row-progress', fraction === null ? '' : `${Math.round(fraction * 100)}%`),
      el('span', 'aiaas-Row-loss', loss ? `${loss.name} ${formatNumber(loss.value)}` : ''),
      el('span', 'aiaas-Row-elapsed', formatDuration(elapsedSeconds(run, nowMs)))
    );
    const buttons = el('div', 'aiaas-Row-actions');
    buttons.dataset.runId = run.id;
    const logs = el('button', 'jp-Button aiaas-Button', 'Logs');
    logs.dataset.action = 'logs';
    logs.title = `Open the output of ${run.name} in a tab`;
    buttons.append(logs);
    if (isActive(run) && !run.cancel_requested) {
      const cancel = el('button', 'jp-Button aiaas-Button aiaas-Button-cancel', 'Cancel');
      cancel.dataset.action = 'cancel';
      cancel.title = `Stop ${run.name} after its current step`;
      buttons.append(cancel);
    }
    const parts = [head, bar, facts];
    if (run.datasets?.length) {
      const data = el('div', 'aiaas-Row-datasets', `data: ${run.datasets.join(', ')}`);
      data.title = 'The dataset versions this run reads (pinned when it was submitted)';
      parts.push(data);
    }
    if (run.status === 'failed' && run.error) {
      const error = el('div', 'aiaas-Row-error', oneLine(run.error));
      error.title = run.error;
      parts.push(error);
    }
    parts.push(buttons);
    return parts;
  }

  private _deploymentRow(dep: DeploymentView): HTMLElement[] {
    const head = el('div', 'aiaas-Row-head aiaas-Row-clickable');
    head.dataset.deployment = dep.name;
    head.dataset.action = 'detail';
    head.title = this._selected === dep.name ? 'Hide the details' : `Show ${dep.name}'s figures, charts and events`;
    head.append(el('span', 'aiaas-Row-name', dep.name), el('span', `aiaas-Status aiaas-Status-${dep.status}`, dep.status));
    const rate = this.model.rate(dep.name);
    const facts = el('div', 'aiaas-Row-facts');
    facts.append(
      el('span', 'aiaas-Row-version', `model ${dep.run_id}`),
      el('span', 'aiaas-Row-replicas', `${dep.ready_replicas}/${dep.replicas} replicas`),
      el('span', 'aiaas-Row-rate', rate === null ? '– req/s' : `${formatNumber(rate)} req/s`)
    );
    const parts: HTMLElement[] = [head, facts];
    if (dep.optimization) {
      const optimized = el('div', 'aiaas-Row-optimization', formatOptimization(dep.optimization));
      optimized.title = `measured at deploy against the model as trained; tolerance ${dep.optimization.tolerance}`;
      parts.push(optimized);
    }
    if (dep.error) {
      parts.push(el('div', 'aiaas-Row-error', oneLine(dep.error)));
    }
    const firing = firingText(dep);
    if (firing) {
      const alerts = el('div', 'aiaas-Row-alerts', firing);
      alerts.title = 'SLO rules breached now; click the deployment for its events';
      parts.push(alerts);
    }
    if (this._selected === dep.name) {
      const events = this._eventsSupported === true ? this._events.get(dep.name) ?? [] : null;
      parts.push(deploymentDetail(dep, rate, this.model.history, events));
    }
    return parts;
  }

  private _banner: HTMLElement;
  private _runs: HTMLElement;
  private _deployments: HTMLElement;
  private _byId = new Map<string, RunPublic>();
  private _selected: string | null = null;
  private _events = new Map<string, DeploymentEvent[]>();
  private _eventsSupported: boolean | null = null;
  private _fetching = false;
}
