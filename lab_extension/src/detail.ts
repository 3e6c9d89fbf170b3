/**
 * A deployment's detail under its sidebar row: the figures of the notebook's
 * live view (requests/s, p50/p95/p99, errors, rejected, queue, batches), two
 * small charts over the last minutes and the recent events; the alerts firing
 * now come first. Rebuilt on each
 * overview tick; the panel keeps unchanged nodes, so it does not flicker.
 */

import { DeploymentEvent, DeploymentHistory, Point, detailFigures, firingText, formatEvent, sparkline } from './deployment';
import { DeploymentView, formatNumber } from './models';

const NS = 'http://www.w3.org/2000/svg';
const W = 220;
const H = 40;

function div(className: string, text = ''): HTMLDivElement {
  const node = document.createElement('div');
  node.className = className;
  node.textContent = text;
  return node;
}

function chart(label: string, points: Point[], unit: string, className: string): HTMLElement {
  const box = div(`aiaas-Detail-chart ${className}`);
  const last = points[points.length - 1];
  box.append(div('aiaas-Detail-chartLabel', `${label}${last ? `: ${formatNumber(last.value)}${unit}` : ''}`));
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.dataset.points = String(points.length);
  const line = document.createElementNS(NS, 'polyline');
  line.setAttribute('points', sparkline(points, W, H));
  svg.append(line);
  box.append(svg);
  return box;
}

/** The detail of `dep`; `events` is null when the backend has no events API. */
export function deploymentDetail(dep: DeploymentView, rate: number | null, history: DeploymentHistory,
                                 events: DeploymentEvent[] | null): HTMLElement {
  const detail = div('aiaas-Detail');
  detail.dataset.detail = dep.name;
  const firing = firingText(dep);
  if (firing) {
    // First, above the figures: what a user opening a deployment must not miss.
    const alerts = div('aiaas-Detail-alerts', firing);
    alerts.dataset.rules = (dep.alerts_firing ?? []).join(',');
    alerts.title = 'SLO rules breached now (dep.set_alerts); the events below say since when and by how much';
    detail.append(alerts);
  }
  const grid = div('aiaas-Detail-figures');
  for (const [label, text, key] of detailFigures(dep, rate)) {
    const cell = div(`aiaas-Detail-figure aiaas-Detail-${key}`);
    cell.append(div('aiaas-Detail-label', label), div('aiaas-Detail-value', text));
    grid.append(cell);
  }
  detail.append(grid);
  detail.append(chart('requests/s', history.rates(dep.name), '', 'aiaas-Detail-rateChart'),
                chart('p99', history.p99(dep.name), ' ms', 'aiaas-Detail-p99Chart'));
  if (!dep.stats) {
    detail.append(div('aiaas-Detail-note', 'No figures: the deployment is not running.'));
  }
  if (events !== null) {
    const list = div('aiaas-Detail-events');
    list.append(div('aiaas-Detail-label', 'Events'));
    if (events.length === 0) {
      list.append(div('aiaas-Detail-note', 'none yet'));
    }
    for (const event of [...events].reverse().slice(0, 8)) {
      const line = div(`aiaas-Detail-event aiaas-Event-${event.kind}`, formatEvent(event));
      line.dataset.seq = String(event.seq);
      list.append(line);
    }
    detail.append(list);
  }
  return detail;
}
