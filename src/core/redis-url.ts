import { readFileSync } from 'node:fs';

export interface RedisAddress {
  host: string;
  port: number;
}

interface Credentials {
  username?: string;
  password?: string;
}

/** TLS on (`rediss://`); `ca` is the PEM read from `?ca=`, otherwise Node's system store verifies the server. */
export interface RedisTls {
  ca?: string;
}

/** Where errand's Redis lives, parsed once from REDIS_URL. */
export type RedisTopology =
  | ({ kind: 'single'; address: RedisAddress; db: number; tls?: RedisTls } & Credentials)
  | ({ kind: 'cluster'; nodes: RedisAddress[] } & Credentials)
  | ({ kind: 'sentinel'; sentinels: RedisAddress[]; masterName: string } & Credentials);

export class RedisUrlError extends Error {
  override name = 'RedisUrlError';
}

const DEFAULT_PORT = 6379;
const DEFAULT_SENTINEL_PORT = 26379;

// scheme://[userinfo@]hostlist[/path][?query] — written by hand because WHATWG URL refuses a host list.
const URL_SHAPE = /^([a-z][a-z0-9+.-]*):\/\/(?:([^@/?#]*)@)?([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/i;

function decode(part: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new RedisUrlError(`${what} is not valid percent-encoding`);
  }
}

function parseCredentials(userinfo: string | undefined): Credentials {
  if (userinfo === undefined || userinfo === '') return {};
  const colon = userinfo.indexOf(':');
  // `user` alone is a username (as WHATWG URL reads it); `:pass` is a password for the default user.
  const username = decode(colon === -1 ? userinfo : userinfo.slice(0, colon), 'the user name');
  const password = colon === -1 ? undefined : decode(userinfo.slice(colon + 1), 'the password');
  return { ...(username ? { username } : {}), ...(password ? { password } : {}) };
}

// Messages name the position, not the text: a password with an unencoded `/` or `@` ends up in the host part.
function parseAddress(text: string, defaultPort: number, position: number): RedisAddress {
  // `[::1]:6379` for IPv6, `host:port` or `host` otherwise.
  const match = /^(?:\[([0-9a-f:.]+)\]|([^:[\]\s@]+))(?::(\d{1,5}))?$/i.exec(text);
  if (!match) throw new RedisUrlError(`host ${position} is not a host or host:port (percent-encode / ? # @ in a password)`);
  const port = match[3] === undefined ? defaultPort : Number(match[3]);
  if (port < 1 || port > 65535) throw new RedisUrlError(`port ${match[3]} is out of range`);
  return { host: match[1] ?? match[2], port };
}

function parseHostList(text: string, defaultPort: number): RedisAddress[] {
  if (text === '') throw new RedisUrlError('no host');
  return text.split(',').map((part, i) => parseAddress(part.trim(), defaultPort, i + 1));
}

function parseQuery(query: string | undefined, allowed: readonly string[]): Map<string, string> {
  const params = new Map<string, string>();
  if (!query) return params;
  for (const pair of query.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = decode(eq === -1 ? pair : pair.slice(0, eq), 'a query parameter');
    if (!allowed.includes(key))
      throw new RedisUrlError(`unknown query parameter "${key}"${allowed.length ? ` (allowed: ${allowed.join(', ')})` : ''}`);
    params.set(key, decode(eq === -1 ? '' : pair.slice(eq + 1), `query parameter ${key}`));
  }
  return params;
}

function parseDb(path: string | undefined): number {
  if (path === undefined || path === '/' || path === '') return 0;
  if (!/^\/\d{1,2}$/.test(path)) throw new RedisUrlError('the path is not a database number');
  return Number(path.slice(1));
}

function readCa(path: string): string {
  if (path === '') throw new RedisUrlError('?ca= needs a file path');
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new RedisUrlError(`cannot read the CA file ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/**
 * Parses REDIS_URL: `redis://` / `rediss://[user:pass@]host[:port][/db][?ca=FILE]`,
 * `redis+cluster://[user:pass@]host:port,host:port,…`,
 * `redis+sentinel://[user:pass@]host:port,host:port,…/MASTER_NAME`.
 * Errors never quote the URL itself: it may hold a password.
 */
export function parseRedisUrl(url: string): RedisTopology {
  const match = URL_SHAPE.exec(url.trim());
  if (!match) throw new RedisUrlError('is not a URL of the form scheme://host:port');
  const [, rawScheme, userinfo, hostList, path, query] = match;
  const scheme = rawScheme.toLowerCase();
  const credentials = parseCredentials(userinfo);
  switch (scheme) {
    case 'redis':
    case 'rediss': {
      const tls = scheme === 'rediss';
      const params = parseQuery(query, tls ? ['ca'] : []);
      const addresses = parseHostList(hostList, DEFAULT_PORT);
      if (addresses.length > 1)
        throw new RedisUrlError(`${scheme}:// takes one host; use redis+cluster:// or redis+sentinel:// for several`);
      const ca = params.has('ca') ? readCa(params.get('ca')!) : undefined;
      return {
        kind: 'single',
        address: addresses[0],
        db: parseDb(path),
        ...credentials,
        ...(tls ? { tls: ca === undefined ? {} : { ca } } : {}),
      };
    }
    case 'redis+cluster': {
      parseQuery(query, []);
      // A cluster has only database 0.
      if (path !== undefined && path !== '/') throw new RedisUrlError('redis+cluster:// takes no path (a cluster has only database 0)');
      return { kind: 'cluster', nodes: parseHostList(hostList, DEFAULT_PORT), ...credentials };
    }
    case 'redis+sentinel': {
      parseQuery(query, []);
      const masterName = decode((path ?? '').replace(/^\//, ''), 'the master name');
      if (masterName === '' || masterName.includes('/'))
        throw new RedisUrlError('redis+sentinel:// needs the master name as its path: redis+sentinel://host:port,…/MASTER_NAME');
      return { kind: 'sentinel', sentinels: parseHostList(hostList, DEFAULT_SENTINEL_PORT), masterName, ...credentials };
    }
    default:
      throw new RedisUrlError(`unknown scheme "${scheme}://" (use redis://, rediss://, redis+cluster:// or redis+sentinel://)`);
  }
}

/** Host list for logs: never credentials. */
export function describeRedisTopology(topology: RedisTopology): string {
  const list = (addresses: RedisAddress[]) =>
    addresses.map((a) => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`)).join(',');
  switch (topology.kind) {
    case 'single':
      return `${topology.tls ? 'rediss' : 'redis'}://${list([topology.address])}/${topology.db}`;
    case 'cluster':
      return `redis+cluster://${list(topology.nodes)}`;
    case 'sentinel':
      return `redis+sentinel://${list(topology.sentinels)}/${topology.masterName}`;
  }
}

/**
 * BullMQ keeps each queue's keys under `prefix:queue:…` and its Lua scripts touch several of them at once: on a
 * cluster they must share one slot, so the prefix is hash-tagged (`errand` → `{errand}`). A prefix that already
 * holds a tag is the operator's choice and stays.
 */
export function clusterQueuePrefix(prefix: string): string {
  if (/\{[^}]+\}/.test(prefix)) return prefix;
  if (/[{}]/.test(prefix)) throw new RedisUrlError(`QUEUE_PREFIX "${prefix}" has a brace but no {hash tag}`);
  return `{${prefix}}`;
}
