/** The status bar item: connected or not, and how many runs are active. */

import { Widget } from '@lumino/widgets';

import { BackendModel, BackendState } from './poller';
import { oneLine } from './models';

export function statusText(state: BackendState): { text: string; title: string } {
  switch (state.kind) {
    case 'loading':
      return { text: 'aiaas: …', title: 'Connecting to the aiaas backend' };
    case 'not-connected':
      return { text: 'aiaas: not connected', title: oneLine(state.info.error, 400) };
    case 'connected': {
      const n = state.overview.active_runs;
      return {
        text: `aiaas: connected · ${n} active run${n === 1 ? '' : 's'}`,
        title: `Connected to ${state.overview.url}`
      };
    }
  }
}

export class AiaasStatus extends Widget {
  constructor(model: BackendModel, onClick: () => void) {
    super();
    this.addClass('aiaas-StatusItem');
    this.node.addEventListener('click', onClick);
    const show = (state: BackendState) => {
      const { text, title } = statusText(state);
      this.node.textContent = text;
      this.node.title = title;
      this.node.dataset.state = state.kind;
    };
    show(model.state);
    model.changed.connect((_, state) => show(state));
  }
}
