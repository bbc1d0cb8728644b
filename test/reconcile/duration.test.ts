import t from 'tap';
import { parseDuration } from '../../src/reconcile/duration.js';
import { oneOffSweepJobId } from '../../src/reconcile/jobs.js';
import { forEachWithConcurrency } from '../../src/reconcile/sweep.js';

t.test('parseDuration reads a number and one unit', async (t) => {
  t.equal(parseDuration('30m'), 30 * 60_000);
  t.equal(parseDuration('24h'), 24 * 3_600_000);
  t.equal(parseDuration('2d'), 2 * 86_400_000);
  t.equal(parseDuration('90s'), 90_000);
  t.equal(parseDuration('1.5h'), 5_400_000);
});

t.test('parseDuration refuses everything else', async (t) => {
  for (const bad of [
    '',
    '24',
    'h',
    '0h',
    '0.0m',
    '-1h',
    '+1h',
    '1 h',
    ' 1h',
    '1h ',
    '1H',
    '1w',
    '1h30m',
    '1e3s',
    '.5h',
    '5.h',
    'NaNh',
    'Infinityd',
  ]) {
    t.equal(parseDuration(bad), undefined, JSON.stringify(bad));
  }
});

t.test('one-off sweep job ids are unique, never all digits and carry no colon', async (t) => {
  const ids = new Set(Array.from({ length: 50 }, () => oneOffSweepJobId()));
  t.equal(ids.size, 50);
  for (const id of ids) {
    t.notOk(id.includes(':'), id);
    t.notOk(/^\d+$/.test(id), id);
  }
});

t.test('forEachWithConcurrency visits every item once with at most `limit` in flight', async (t) => {
  let inFlight = 0;
  let maxInFlight = 0;
  const seen: number[] = [];
  const items = Array.from({ length: 37 }, (_, i) => i);
  await forEachWithConcurrency(items, 4, async (item) => {
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise((resolve) => setTimeout(resolve, 1 + (item % 3)));
    seen.push(item);
    inFlight -= 1;
  });
  t.same(
    seen.slice().sort((a, b) => a - b),
    items,
  );
  t.equal(maxInFlight, 4);
  await forEachWithConcurrency([], 4, async () => void t.fail('no call for no items'));
});
