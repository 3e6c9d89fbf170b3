/**
 * The aiaas JupyterLab plugin: wires the shared backend model to the
 * sidebar, the status bar, the logs tabs and the settings.
 */

import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, MainAreaWidget, WidgetTracker, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { AiaasApi } from './api';
import { RunLogs, logsWidget } from './logs';
import { RunPublic } from './models';
import { AiaasPanel } from './panel';
import { BackendModel } from './poller';
import { AiaasStatus } from './statusbar';

const PLUGIN_ID = 'aiaas-lab:plugin';

// A stack of three layers: "a model being built", drawn for this extension.
const aiaasIcon = new LabIcon({
  name: 'aiaas:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<path d="M12 2 2 7l10 5 10-5z"/><path d="m2 12 10 5 10-5-2-1-8 4-8-4z"/>' +
    '<path d="m2 17 10 5 10-5-2-1-8 4-8-4z"/></g></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'aiaas runs and deployments in the sidebar, and the connection in the status bar.',
  autoStart: true,
  optional: [ISettingRegistry, IStatusBar, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    settingRegistry: ISettingRegistry | null,
    statusBar: IStatusBar | null,
    restorer: ILayoutRestorer | null
  ) => {
    const api = new AiaasApi();
    const model = new BackendModel(api);
    const logsTracker = new WidgetTracker<MainAreaWidget<RunLogs>>({ namespace: 'aiaas-logs' });

    const openLogs = (run: RunPublic) => {
      const open = logsTracker.find(w => w.id === `aiaas-logs-${run.id}`);
      if (open) {
        app.shell.activateById(open.id);
        return;
      }
      const widget = logsWidget(api, run);
      void logsTracker.add(widget);
      app.shell.add(widget, 'main');
      app.shell.activateById(widget.id);
    };

    const cancel = async (run: RunPublic) => {
      const answer = await showDialog({
        title: `Cancel ${run.name}?`,
        body: 'The run stops after its current step; its metrics and logs stay.',
        buttons: [Dialog.cancelButton({ label: 'Keep running' }), Dialog.warnButton({ label: 'Cancel run' })]
      });
      if (!answer.button.accept) {
        return;
      }
      try {
        await api.cancel(run.id);
      } catch (error) {
        void showErrorMessage('aiaas: could not cancel', (error as Error).message);
      }
      void model.refresh();
    };

    const panel = new AiaasPanel(model, { cancel: r => void cancel(r), openLogs });
    panel.title.icon = aiaasIcon;
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'aiaas-panel');

    app.commands.addCommand('aiaas:refresh', {
      label: 'aiaas: Refresh runs and deployments',
      execute: () => model.refresh()
    });
    app.commands.addCommand('aiaas:open-panel', {
      label: 'aiaas: Show runs and deployments',
      execute: () => app.shell.activateById(panel.id)
    });

    if (statusBar) {
      statusBar.registerStatusItem(`${PLUGIN_ID}:status`, {
        item: new AiaasStatus(model, () => app.shell.activateById(panel.id)),
        align: 'left',
        rank: 100
      });
    }

    if (settingRegistry) {
      const apply = (settings: ISettingRegistry.ISettings) => {
        api.backendUrl = String(settings.get('backendUrl').composite ?? '').trim();
        model.setRefreshSeconds(Number(settings.get('refreshSeconds').composite ?? 2));
        void model.refresh();
      };
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          apply(settings);
          settings.changed.connect(apply);
        })
        .catch(reason => console.error('aiaas: could not load the settings', reason));
    }
  }
};

export default plugin;
