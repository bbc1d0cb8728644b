import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError, loadConfig } from '../../src/config.js';
import { clusterQueuePrefix, describeRedisTopology, parseRedisUrl } from '../../src/core/redis-url.js';

t.test('one server: host, port, database, credentials', async (t) => {
  t.same(parseRedisUrl('redis://127.0.0.1:6379'), { kind: 'single', address: { host: '127.0.0.1', port: 6379 }, db: 0 });
  t.same(parseRedisUrl('redis://cache.internal'), { kind: 'single', address: { host: 'cache.internal', port: 6379 }, db: 0 });
  t.same(parseRedisUrl('redis://app:s%40cret@h:7000/3'), {
    kind: 'single',
    address: { host: 'h', port: 7000 },
    db: 3,
    username: 'app',
    password: 's@cret',
  });
  t.same(parseRedisUrl('redis://:only-password@h'), {
    kind: 'single',
    address: { host: 'h', port: 6379 },
    db: 0,
    password: 'only-password',
  });
  t.same(parseRedisUrl('redis://[::1]:6380/'), { kind: 'single', address: { host: '::1', port: 6380 }, db: 0 });
  t.same(parseRedisUrl('REDIS://h:1'), { kind: 'single', address: { host: 'h', port: 1 }, db: 0 }, 'scheme is case-insensitive');
});

t.test('rediss: TLS with the system store, or a CA file read at start', async (t) => {
  t.same(parseRedisUrl('rediss://h:6380'), { kind: 'single', address: { host: 'h', port: 6380 }, db: 0, tls: {} });
  const dir = mkdtempSync(join(tmpdir(), 'errand-ca-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const caPath = join(dir, 'ca.pem');
  writeFileSync(caPath, '-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n');
  t.same(parseRedisUrl(`rediss://h:6380?ca=${encodeURIComponent(caPath)}`), {
    kind: 'single',
    address: { host: 'h', port: 6380 },
    db: 0,
    tls: { ca: '-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n' },
  });
  t.throws(() => parseRedisUrl(`rediss://h?ca=${join(dir, 'missing.pem')}`), /cannot read the CA file .*missing\.pem \(ENOENT\)/);
});

t.test('cluster: any number of nodes, credentials, no path', async (t) => {
  t.same(parseRedisUrl('redis+cluster://a:7000,b:7001,[::1]:7002'), {
    kind: 'cluster',
    nodes: [
      { host: 'a', port: 7000 },
      { host: 'b', port: 7001 },
      { host: '::1', port: 7002 },
    ],
  });
  t.same(parseRedisUrl('redis+cluster://u:p@a:7000'), {
    kind: 'cluster',
    nodes: [{ host: 'a', port: 7000 }],
    username: 'u',
    password: 'p',
  });
});

t.test('sentinel: sentinel addresses (default port 26379) and the master name', async (t) => {
  t.same(parseRedisUrl('redis+sentinel://:pw@s1:26380,s2/mymaster'), {
    kind: 'sentinel',
    sentinels: [
      { host: 's1', port: 26380 },
      { host: 's2', port: 26379 },
    ],
    masterName: 'mymaster',
    password: 'pw',
  });
});

t.test('malformed URLs: one line each, naming what is wrong, never echoing the password', async (t) => {
  const cases: [string, RegExp][] = [
    ['localhost:6379', /not a URL/],
    ['http://h:6379', /unknown scheme "http:\/\/"/],
    ['redis://', /no host/],
    ['redis://h:0', /port 0 is out of range/],
    ['redis://h:99999', /out of range/],
    ['redis://h:port', /not a host or host:port/],
    ['redis://a:1,b:2', /takes one host/],
    ['redis://h/x', /not a database number/],
    ['redis://h?ca=/x', /unknown query parameter "ca"/],
    ['rediss://h?ca=', /needs a file path/],
    ['rediss://h?tls=1', /unknown query parameter "tls"/],
    ['redis+cluster://a:1,,b:2', /not a host or host:port/],
    ['redis+cluster://a:1/0', /takes no path/],
    ['redis+sentinel://s1:26379', /needs the master name/],
    ['redis+sentinel://s1:26379/', /needs the master name/],
    ['redis://u:%zz@h', /password is not valid percent-encoding/],
  ];
  for (const [url, reason] of cases) {
    t.throws(() => parseRedisUrl(url), reason, url);
    try {
      loadConfig({ REDIS_URL: url });
      t.fail(`${url} accepted`);
    } catch (error) {
      t.type(error, ConfigError);
      const message = (error as Error).message;
      t.match(message, /^invalid configuration: REDIS_URL /, `${url} → ${message}`);
      t.notOk(message.includes('\n'), 'one line');
    }
  }
  for (const url of [
    'redis://user:hunter2-secret@a:1,b:2',
    'redis://user:hun/ter2@h',
    'redis://user:hun@ter2@h',
    'redis+cluster://u:hunter2@a:1,b:x',
  ]) {
    const message = loadConfigError({ REDIS_URL: url });
    t.notMatch(message, /hun|ter2/, `no part of the password in: ${message}`);
  }
});

function loadConfigError(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('config accepted');
}

t.test('config: parsed once; on a cluster the queue prefix gets its hash tag', async (t) => {
  const single = loadConfig({ REDIS_URL: 'redis://h:1', QUEUE_PREFIX: 'errand' });
  t.equal(single.QUEUE_PREFIX, 'errand', 'no tag outside a cluster');
  t.same(single.redis, { kind: 'single', address: { host: 'h', port: 1 }, db: 0 });
  t.equal(loadConfig({}).redis.kind, 'single', 'the default URL parses');

  const cluster = loadConfig({ REDIS_URL: 'redis+cluster://a:1,b:2', QUEUE_PREFIX: 'errand' });
  t.equal(cluster.QUEUE_PREFIX, '{errand}');
  t.equal(loadConfig({ REDIS_URL: 'redis+cluster://a:1', QUEUE_PREFIX: '{errand}' }).QUEUE_PREFIX, '{errand}', 'a tagged prefix stays');
  t.equal(loadConfig({ REDIS_URL: 'redis+cluster://a:1', QUEUE_PREFIX: 'prod{errand}' }).QUEUE_PREFIX, 'prod{errand}');
  t.equal(
    loadConfig({ REDIS_URL: 'redis+sentinel://s/m', QUEUE_PREFIX: 'errand' }).QUEUE_PREFIX,
    'errand',
    'Sentinel: one primary, no tag',
  );
  t.match(
    loadConfigError({ REDIS_URL: 'redis+cluster://a:1', QUEUE_PREFIX: 'err{and' }),
    /^invalid configuration: QUEUE_PREFIX "err\{and" has a brace but no \{hash tag\}$/,
  );

  t.equal(clusterQueuePrefix('x'), '{x}');
  t.throws(() => clusterQueuePrefix('{}x'), /has a brace but no \{hash tag\}/, 'an empty tag is no tag: Redis would hash the whole key');
});

t.test('topology descriptions for logs carry no credentials', async (t) => {
  t.equal(describeRedisTopology(parseRedisUrl('redis://u:secret@h:1/2')), 'redis://h:1/2');
  t.equal(describeRedisTopology(parseRedisUrl('redis+cluster://u:secret@a:1,[::1]:2')), 'redis+cluster://a:1,[::1]:2');
  t.equal(describeRedisTopology(parseRedisUrl('redis+sentinel://:secret@s:1/m')), 'redis+sentinel://s:1/m');
});
