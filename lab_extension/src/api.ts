/**
 * Calls to the Jupyter server's /aiaas/ routes. ServerConnection adds
 * Jupyter's token and XSRF header; the API key never reaches the browser.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { LogsPage, NotConnected, Overview, RunPublic, parseOverview } from './models';

/** Raised when the Jupyter server cannot use the backend; `message` is one readable line. */
export class NotConnectedError extends Error {
  constructor(readonly info: NotConnected) {
    super(info.error);
  }
}

export class AiaasApi {
  /** `backendUrl` is the URL from the settings ('' = the one the Jupyter server is configured with). */
  constructor(
    public backendUrl = '',
    private readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  async overview(): Promise<Overview> {
    const result = parseOverview(await this.request('overview'));
    if (!result.connected) {
      throw new NotConnectedError(result);
    }
    return result;
  }

  run(runId: string): Promise<RunPublic> {
    return this.request(`api/runs/${encodeURIComponent(runId)}`) as Promise<RunPublic>;
  }

  cancel(runId: string): Promise<RunPublic> {
    return this.request(`api/runs/${encodeURIComponent(runId)}/cancel`, { method: 'POST' }) as Promise<RunPublic>;
  }

  /** The deployment's events after `after` (the alerts API); rejects with "404: ..." on a backend without it. */
  deploymentEvents(name: string, after: number): Promise<unknown> {
    return this.request(`api/deployments/${encodeURIComponent(name)}/events?after=${after}`);
  }

  logs(runId: string, after: number): Promise<LogsPage> {
    return this.request(`api/runs/${encodeURIComponent(runId)}/logs?after=${after}&limit=5000`) as Promise<LogsPage>;
  }

  private async request(path: string, init: RequestInit = {}): Promise<unknown> {
    const headers = new Headers(init.headers);
    if (this.backendUrl) {
      headers.set('X-Aiaas-Backend', this.backendUrl);
    }
    const url = URLExt.join(this.settings.baseUrl, 'aiaas', path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, { ...init, headers }, this.settings);
    } catch (error) {
      throw new NotConnectedError({
        connected: false,
        url: this.backendUrl,
        reason: 'jupyter_unreachable',
        error: `the Jupyter server could not be reached (${(error as Error).message})`
      });
    }
    const text = await response.text();
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON (a proxy's error page, say): reported below by status.
    }
    const fields = (body ?? {}) as Record<string, unknown>;
    if (fields.connected === false) {
      throw new NotConnectedError(parseOverview(body) as NotConnected);
    }
    if (!response.ok) {
      // The backend's errors carry `detail`; Jupyter's own carry `message`.
      const detail = fields.detail ?? fields.message ?? text.slice(0, 200);
      throw new Error(`${response.status}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
    }
    return body;
  }
}
