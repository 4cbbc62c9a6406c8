/**
 * Where the job queue lives: a `redis://[user:password@]HOST[:PORT][/DB]` URL (`rediss://` for
 * TLS) and a queue name, checked once here; and a connection that fails fast and clearly when the
 * server cannot be reached (BullMQ itself would retry forever in silence).
 */
import { Redis } from "ioredis";
import { invalidArgument, SuperglobalError } from "../errors.ts";

/** The queue every `superglobal index --queue` and `superglobal worker` use unless told another. */
export const DEFAULT_QUEUE_NAME = "superglobal";

export interface QueueAddress {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  tls: boolean;
  /** The URL without its password, for messages. */
  display: string;
}

/** Parses and checks a queue URL (INVALID_ARGUMENT naming `name` otherwise). */
export function parseQueueUrl(url: unknown, name = "queue"): QueueAddress {
  const expected = "a redis://HOST:PORT URL";
  if (typeof url !== "string") invalidArgument(name, expected, url);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    invalidArgument(name, expected, url);
  }
  if ((u.protocol !== "redis:" && u.protocol !== "rediss:") || u.hostname === "") {
    invalidArgument(name, expected, url);
  }
  const port = u.port === "" ? 6379 : Number(u.port);
  const path = u.pathname.replace(/^\//, "");
  if (!/^\d*$/.test(path) || u.search !== "" || u.hash !== "") {
    invalidArgument(name, `${expected} with an optional /DB number`, url);
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  return {
    host,
    port,
    db: path === "" ? 0 : Number(path),
    ...(u.username === "" ? {} : { username: decodeURIComponent(u.username) }),
    ...(u.password === "" ? {} : { password: decodeURIComponent(u.password) }),
    tls: u.protocol === "rediss:",
    display: `${u.protocol}//${u.host}${path === "" ? "" : `/${path}`}`,
  };
}

/** Checks a queue name: letters, digits, `.`, `_`, `-` (it becomes part of Redis keys). */
export function checkQueueName(name: unknown): string {
  if (typeof name !== "string" || !/^[A-Za-z0-9._-]{1,100}$/.test(name)) {
    invalidArgument("queue name", "1 to 100 letters, digits, '.', '_' or '-'", name);
  }
  return name;
}

/** The connection options BullMQ takes (workers need `maxRetriesPerRequest: null`). */
export function bullConnection(address: QueueAddress) {
  return {
    host: address.host,
    port: address.port,
    db: address.db,
    ...(address.username === undefined ? {} : { username: address.username }),
    ...(address.password === undefined ? {} : { password: address.password }),
    ...(address.tls ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
  };
}

/**
 * A plain Redis client, connected now: IO_ERROR naming the URL when the server does not answer
 * (instead of BullMQ's silent reconnecting). The caller quits it.
 */
export async function connectRedis(address: QueueAddress): Promise<Redis> {
  const client = new Redis({
    ...bullConnection(address),
    lazyConnect: true,
    connectTimeout: 5000,
    maxRetriesPerRequest: 2,
    // Reconnect a few times over a dropped connection; never loop forever.
    retryStrategy: (times) => (times > 5 ? null : 200 * times),
  });
  // Errors surface through the commands' promises; without a listener ioredis would log them.
  client.on("error", () => {});
  try {
    await client.connect();
    await client.ping();
  } catch (cause) {
    client.disconnect();
    throw new SuperglobalError(
      "IO_ERROR",
      `${address.display}: cannot reach the queue's Redis server (${(cause as Error).message})`,
      { input: address.display, cause },
    );
  }
  return client;
}
