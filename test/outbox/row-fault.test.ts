import t from 'tap';
import { isRowFault, UnknownQueueError } from '../../src/outbox/row-fault.js';
import { relayBackoffMs } from '../../src/outbox/relay.js';

// ioredis's ReplyError carries Redis's reply as its message; a plain Error with the same text classifies the same.
const reply = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });

t.test('errors that belong to the row count against it', async (t) => {
  t.ok(isRowFault(new UnknownQueueError('outbox row 7 names unknown queue gone')), 'unknown queue');
  t.ok(isRowFault(new Error('Custom Id cannot be integers')), 'BullMQ refuses the job id');
  t.ok(isRowFault(new Error('Custom Id cannot contain :')), 'BullMQ refuses the job id');
  t.ok(isRowFault(new Error('Priority should be between 0 and 2097152')), 'BullMQ refuses the options');
  t.ok(isRowFault(new Error('The size of job big exceeds the limit 100 bytes')), 'BullMQ refuses the size');
  t.ok(isRowFault(reply('ERR string exceeds maximum allowed size (proto-max-bulk-len)')), 'Redis refuses the payload');
  t.ok(isRowFault(new TypeError('Do not know how to serialize a BigInt')), 'the payload cannot be serialised');
});

t.test('every other error means Redis cannot take writes now: the row is kept', async (t) => {
  for (const message of [
    "OOM command not allowed when used memory > 'maxmemory'.",
    'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.',
    'CLUSTERDOWN The cluster is down',
    "READONLY You can't write against a read only replica.",
    'LOADING Redis is loading the dataset in memory',
    'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.',
    'TRYAGAIN Multiple keys request during rehashing of slot',
    'MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to no.',
    'NOREPLICAS Not enough good replicas to write.',
    'ERR max number of clients reached',
  ]) {
    t.notOk(isRowFault(reply(message)), message.split(' ')[0]);
  }
  t.notOk(isRowFault(new Error('Command timed out')), 'a command timeout');
  t.notOk(isRowFault(new Error('Connection is closed.')), 'a closed connection');
  t.notOk(isRowFault(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' })), 'refused');
  t.notOk(isRowFault(new Error('something never seen before')), 'an unknown error keeps the row');
  t.notOk(isRowFault('a string'), 'a non-Error keeps the row');
  t.notOk(isRowFault(new TypeError("Cannot read properties of undefined (reading 'status')")), 'a TypeError not about the payload');
});

t.test('the relay backs off with a growing delay, capped', async (t) => {
  t.equal(relayBackoffMs(1000, 0), 1000, 'healthy: the poll interval');
  t.same(
    [1, 2, 3, 4].map((n) => relayBackoffMs(1000, n)),
    [2000, 4000, 8000, 10000],
    'doubling, capped at 10 s',
  );
  t.equal(relayBackoffMs(1000, 1000), 10000, 'no overflow after many failures');
  t.equal(relayBackoffMs(100, 3), 800);
  t.equal(relayBackoffMs(60000, 5), 60000, 'a poll interval above the cap stays');
});
