// The producer's Cluster client gets back a node connection it lost while Redis stayed healthy (docs/notes/redis-stall.md).
import t from 'tap';
import type { Cluster } from 'ioredis';
import { createRedis, parseRedisUrl } from '../../src/core/redis.js';
import { waitFor } from '../support/helpers.js';
import { probeRedis, startRedisCluster } from '../support/redis-topologies.js';

const cluster = await startRedisCluster(t, { primaries: 3 });

t.test('a node connection the server dropped comes back, and that primary answers again', async (t) => {
  const producer = createRedis(parseRedisUrl(cluster.url), 'producer') as Cluster;
  producer.on('error', () => {});
  producer.on('node error', () => {});
  t.teardown(() => producer.disconnect());
  await waitFor(() => producer.status === 'ready' || undefined, 10000, 'the producer cluster client ready');
  // Touch every primary, so each has an open node connection (as warnUnlessNoEviction does at start).
  await Promise.all(producer.nodes('master').map((node) => node.ping()));
  t.equal(producer.nodes('master').length, 3, 'three primaries at first');

  // What a start-up stall did (a node connection ended: connect ETIMEDOUT on a starved process, or reset): the
  // server drops one node connection of this client. Cluster node connections never reconnect on their own.
  const [victim] = cluster.nodes;
  const killed = await probeRedis(
    victim.port,
    async (redis) => {
      const clients = (await redis.client('LIST')) as string;
      const ours = clients.split('\n').filter((line) => /\bcmd=(ping|client)\b/.test(line) && !/name=probe/.test(line));
      for (const line of ours) await redis.client('KILL', 'ID', /\bid=(\d+)/.exec(line)![1]);
      return ours.length;
    },
    { connectionName: 'probe' },
  );
  t.ok(killed >= 1, 'the node connection was dropped by the server');
  await waitFor(() => producer.nodes('master').length === 2 || undefined, 5000, 'the client to notice the lost node');

  // Redis is healthy all along: within a slots refresh the client must have the primary again and reach it.
  const back = await waitFor(
    async () => {
      const masters = producer.nodes('master');
      if (!masters.some((node) => node.options.port === victim.port)) return undefined;
      const answers = await Promise.all(masters.map((node) => node.config('GET', 'maxmemory-policy').catch(() => undefined)));
      return answers.every(Boolean) ? answers.length : undefined;
    },
    15000,
    `the client to connect to ${victim.port} again`,
  );
  t.equal(back, 3, 'CONFIG GET answered by every primary');
});
