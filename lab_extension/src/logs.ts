/**
 * A run's output in a main-area tab: lines appended as they arrive, polled
 * only while the tab is visible and only until the run has ended and every
 * line was read.
 */

import { MainAreaWidget } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { AiaasApi } from './api';
import { RunPublic, isActive, oneLine } from './models';

const LOG_INTERVAL_MS = 1000;

export class RunLogs extends Widget {
  constructor(private readonly api: AiaasApi, private readonly run: RunPublic) {
    super();
    this.addClass('aiaas-Logs');
    this._status = document.createElement('div');
    this._status.className = 'aiaas-Logs-status';
    this._pre = document.createElement('pre');
    this._pre.className = 'aiaas-Logs-lines';
    this.node.append(this._status, this._pre);
    this._poll = new Poll({
      factory: () => this._tick(),
      frequency: { interval: LOG_INTERVAL_MS, backoff: true, max: 30_000 },
      name: `aiaas:logs:${run.id}`,
      standby: () => this.isHidden || 'when-hidden'
    });
  }

  dispose(): void {
    this._poll.dispose();
    super.dispose();
  }

  private async _tick(): Promise<void> {
    try {
      // The status first: lines that arrive after it are read in this same tick.
      const run = await this.api.run(this.run.id);
      let page = await this.api.logs(this.run.id, this._after);
      while (page.data.length) {
        this._pre.append(page.data.map(l => l.line + '\n').join(''));
        this._after = page.next_after;
        page = await this.api.logs(this.run.id, this._after);
      }
      this._showStatus(run);
      if (!isActive(run)) {
        if (run.traceback) {
          this._pre.append(`\n${run.traceback}`);
        }
        this._poll.dispose();
      }
    } catch (error) {
      this._status.textContent = `Could not read the logs: ${oneLine((error as Error).message)}`;
      throw error;
    }
  }

  private _showStatus(run: RunPublic): void {
    this._status.dataset.status = run.status;
    this._status.textContent = `${run.name} (${run.id}): ${run.status}${run.error ? ` — ${oneLine(run.error)}` : ''}`;
  }

  private _pre: HTMLPreElement;
  private _status: HTMLElement;
  private _after = 0;
  private _poll: Poll;
}

export function logsWidget(api: AiaasApi, run: RunPublic): MainAreaWidget<RunLogs> {
  const widget = new MainAreaWidget({ content: new RunLogs(api, run) });
  widget.id = `aiaas-logs-${run.id}`;
  widget.title.label = `Logs: ${run.name}`;
  widget.title.caption = `Output of aiaas run ${run.id}`;
  widget.title.closable = true;
  return widget;
}
