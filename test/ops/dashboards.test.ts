import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { QUEUE_NAMES } from '../../src/queues.js';
import { REPO_ROOT, startTestErrand, testEnv } from '../support/helpers.js';
import { parsePrometheus, sampleValue } from '../support/prometheus.js';

const PROMQL_WORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
]);

/** The metric names a PromQL expression reads: what is left once strings, matchers, ranges, groupings, numbers and function calls are gone. */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/(?<![A-Za-z0-9_:.])\d+(\.\d+)?(e[+-]?\d+)?/gi, ' ');
  const names = [...bare.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?/g)].filter(([, , call]) => !call).map(([, name]) => name);
  return names.filter((name) => !PROMQL_WORDS.has(name.toLowerCase()));
}

/** Families from `# TYPE` lines: prom-client declares every registered metric there, samples or not. */
function exportedFamilies(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]));
}

function isExported(name: string, families: Map<string, string>): boolean {
  if (families.has(name)) return true;
  const suffix = /_(bucket|sum|count)$/.exec(name);
  return !!suffix && ['histogram', 'summary'].includes(families.get(name.slice(0, -suffix[0].length)) ?? '');
}

function balanced(expr: string): boolean {
  const pairs: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  const stack: string[] = [];
  for (const char of expr.replace(/"(?:[^"\\]|\\.)*"/g, '""')) {
    if ('([{'.includes(char)) stack.push(char);
    else if (char in pairs && stack.pop() !== pairs[char]) return false;
  }
  return stack.length === 0;
}

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
}
interface Rule {
  alert?: string;
  expr?: unknown;
  for?: unknown;
  labels?: Record<string, unknown>;
  annotations?: Record<string, unknown>;
}

t.test('metricNames reads names, not functions, labels or numbers', async (t) => {
  t.same(metricNames('histogram_quantile(0.95, sum by (queue, le) (rate(a_bucket{job=~"x", s="y"}[5m]))) / b_total > 1e9'), [
    'a_bucket',
    'b_total',
  ]);
  t.same(metricNames('time() - max by (queue) (c_seconds)'), ['c_seconds']);
  t.same(metricNames('max(lag_p99_seconds) / 1e9 > 0.05'), ['lag_p99_seconds'], 'digits inside a name stay');
});

t.test('every metric the dashboard and the alert rules read is one errand exports', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'all', PAYMENTS_RECONCILE_ENABLED: 'true' }));
  await errand.app.inject('/healthz'); // one HTTP sample, so the histogram has series too
  const res = await errand.app.inject('/metrics');
  t.equal(res.statusCode, 200);
  const families = exportedFamilies(res.body);
  const samples = parsePrometheus(res.body);

  const dashboard = JSON.parse(readFileSync(join(REPO_ROOT, 'docs/grafana-dashboard.json'), 'utf8')) as {
    panels: Panel[];
    templating: { list: { definition?: string }[] };
  };
  const dashboardExprs = dashboard.panels.flatMap((panel) => panel.targets?.map((target) => target.expr) ?? []);
  t.ok(dashboardExprs.length >= 15, `dashboard queries (${dashboardExprs.length})`);
  for (const panel of dashboard.panels.filter((p) => p.type !== 'row')) t.ok(panel.targets?.length, `${panel.title} has a query`);
  const variableExprs = dashboard.templating.list.flatMap((v) =>
    v.definition ? [v.definition.replace(/^label_values\((.*), \w+\)$/, '$1')] : [],
  );

  const rules = parseYaml(readFileSync(join(REPO_ROOT, 'docs/prometheus-rules.yml'), 'utf8')) as {
    groups: { name: string; rules: Rule[] }[];
  };
  const ruleExprs = rules.groups.flatMap((group) => group.rules.map((rule) => String(rule.expr)));

  const used = new Set<string>();
  for (const expr of [...dashboardExprs, ...variableExprs, ...ruleExprs]) {
    t.ok(balanced(expr), `balanced: ${expr}`);
    const names = metricNames(expr);
    t.ok(names.length > 0, `reads a metric: ${expr}`);
    for (const name of names) used.add(name);
  }
  for (const name of used) t.ok(isExported(name, families), `${name} is exported by errand`);
  // What the issue asks the dashboard to show.
  for (const name of [
    'errand_queue_jobs',
    'errand_jobs_completed_total',
    'errand_jobs_failed_total',
    'errand_job_duration_seconds_bucket',
    'errand_outbox_unpublished_rows',
    'errand_outbox_oldest_unpublished_age_seconds',
    'errand_http_request_duration_seconds_bucket',
    'errand_http_request_duration_seconds_count',
    'nodejs_eventloop_lag_p99_seconds',
    'errand_jobs_stalled_total',
    'errand_job_scheduler_next_run_timestamp_seconds',
  ]) {
    t.ok(used.has(name), `${name} is used`);
  }

  // The two metrics added for the alerts carry data, not only a TYPE line.
  for (const queue of QUEUE_NAMES)
    t.equal(sampleValue(samples, 'errand_jobs_stalled_total', { queue }), 0, `stalled counter for ${queue} starts at 0`);
  const next = sampleValue(samples, 'errand_job_scheduler_next_run_timestamp_seconds', {
    queue: 'payments-reconcile',
    scheduler: 'payments-reconcile',
  });
  t.ok(
    next !== undefined && next > Date.now() / 1000 && next <= Date.now() / 1000 + 3600,
    `the hourly scheduler's next run is within the hour (${next})`,
  );
});

t.test('the rules file parses into groups of well-formed alerts', async (t) => {
  const rules = parseYaml(readFileSync(join(REPO_ROOT, 'docs/prometheus-rules.yml'), 'utf8')) as {
    groups: { name: unknown; rules: Rule[] }[];
  };
  t.ok(Array.isArray(rules.groups) && rules.groups.length > 0, 'groups');
  const names: string[] = [];
  for (const group of rules.groups) {
    t.type(group.name, 'string', 'group name');
    t.ok(Array.isArray(group.rules) && group.rules.length > 0, `${String(group.name)} has rules`);
    for (const rule of group.rules) {
      t.type(rule.alert, 'string', 'alert name');
      names.push(rule.alert!);
      t.type(rule.expr, 'string', `${rule.alert} expr`);
      if (rule.for !== undefined) t.match(JSON.stringify(rule.for).replaceAll('"', ''), /^\d+[smhd]$/, `${rule.alert} for`);
      t.ok(['warning', 'critical'].includes(String(rule.labels?.severity)), `${rule.alert} severity`);
      t.type(rule.annotations?.summary, 'string', `${rule.alert} summary`);
      t.type(rule.annotations?.description, 'string', `${rule.alert} description`);
    }
  }
  t.equal(new Set(names).size, names.length, 'alert names are unique');
  for (const name of ['ErrandJobsFailing', 'ErrandOutboxBacklog', 'ErrandJobsStalled', 'ErrandSchedulerSilent'])
    t.ok(names.includes(name), name);
});
