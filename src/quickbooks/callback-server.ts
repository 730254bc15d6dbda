/**
 * The one-shot OAuth callback listener behind `qbhealth connect`. It listens on the redirect
 * URI's host and port (or an explicit address when a TLS proxy sits in front), accepts only the
 * redirect path with the `state` it was given, and runs the code exchange exactly once: a
 * callback that repeats (a browser retry, a reload, a double click) waits for the same exchange
 * and gets the same page, and never spends the single-use code a second time.
 */
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { coerceError, ExitCode, OperatorError } from '../errors.js';

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface CallbackParams {
  /** The full callback URL as Intuit redirected to it (what intuit-oauth's createToken parses). */
  readonly callbackUrl: string;
  readonly code: string;
  readonly realmId: string;
}

export interface CallbackServerOptions<T> {
  readonly redirectUri: string;
  /** Where to listen; defaults to the redirect URI's host and port. */
  readonly listen?: ListenAddress;
  readonly state: string;
  /** Runs once, for the first callback carrying the right state. */
  readonly exchange: (params: CallbackParams) => Promise<T>;
  /** The page shown in the browser once the exchange succeeded (plain text, HTML-escaped here). */
  readonly describe: (result: T) => string;
  /** Told about callbacks that were refused (wrong state, wrong path), so the operator sees them. */
  readonly onRejected?: (reason: string) => void;
}

export interface CallbackServer<T> {
  /** The addresses actually listened on, as host:port. */
  readonly addresses: readonly string[];
  /** Settles with the exchange's result, or its failure, or a refusal of consent. */
  readonly result: Promise<T>;
  /** True once a valid callback started the exchange. */
  readonly exchanging: boolean;
  close(): Promise<void>;
}

/** `host:port`, `[v6]:port`, or `:port` meaning 127.0.0.1. */
export function parseListenAddress(text: string): ListenAddress | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port < 1 || port > 65_535) return undefined;
  return { host: match[1] ?? (match[2] || '127.0.0.1'), port };
}

/** The address a redirect URI implies; https needs a TLS terminator in front, so an explicit address. */
export function listenAddressFor(redirectUri: string): ListenAddress {
  const url = new URL(redirectUri);
  if (url.protocol !== 'http:') {
    throw new OperatorError(
      `QBO_REDIRECT_URI is ${url.protocol}//…: qbhealth serves the callback over plain HTTP, so put your TLS proxy in front ` +
        'and pass the address it forwards to with `--listen HOST:PORT`',
      ExitCode.configInvalid,
    );
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return { host, port: url.port === '' ? 80 : Number(url.port) };
}

const escapeHtml = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);

function page(res: ServerResponse, status: number, title: string, text: string): void {
  const body = `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>` +
    `<body><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p></body></html>\n`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    // The callback URL carries a single-use code; nothing on this page may send it elsewhere.
    'referrer-policy': 'no-referrer',
    connection: 'close',
  });
  res.end(body);
}

function sameState(given: string | null, expected: string): boolean {
  if (given === null) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function listen(server: Server, address: ListenAddress): Promise<string> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const where = `${address.host}:${address.port}`;
      if (err.code === 'EADDRINUSE') {
        reject(new OperatorError(`${where} is already in use (the daemon's health server?): stop what listens there, or pass --listen HOST:PORT and forward QBO_REDIRECT_URI to it`, ExitCode.temporaryFailure, { cause: err }));
      } else if (err.code === 'EACCES') {
        reject(new OperatorError(`not allowed to listen on ${where}: use a port above 1023 in QBO_REDIRECT_URI or --listen`, ExitCode.configInvalid, { cause: err }));
      } else {
        reject(new OperatorError(`cannot listen on ${where} for the OAuth callback: ${err.message}`, ExitCode.temporaryFailure, { cause: err }));
      }
    };
    server.once('error', onError);
    server.listen(address.port, address.host, () => {
      server.off('error', onError);
      const bound = server.address() as AddressInfo;
      resolve(bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`);
    });
  });
}

export async function startCallbackServer<T>(opts: CallbackServerOptions<T>): Promise<CallbackServer<T>> {
  const redirect = new URL(opts.redirectUri);
  const address = opts.listen ?? listenAddressFor(opts.redirectUri);
  let exchange: Promise<T> | undefined;
  let settle: { resolve: (v: T) => void; reject: (e: unknown) => void } | undefined;
  const result = new Promise<T>((resolve, reject) => (settle = { resolve, reject }));

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', redirect);
    if (req.method !== 'GET' || url.pathname !== redirect.pathname) {
      opts.onRejected?.(`${req.method} ${url.pathname}: not the redirect path ${redirect.pathname}`);
      return page(res, 404, 'Not found', `This listener only answers ${redirect.pathname}.`);
    }
    const params = url.searchParams;
    if (!sameState(params.get('state'), opts.state)) {
      opts.onRejected?.('a callback arrived with a state that does not match this run; ignored');
      return page(res, 400, 'Unknown authorization', 'This callback does not belong to the running `qbhealth connect` (state mismatch). Start again from the URL it printed.');
    }
    const denied = params.get('error');
    if (denied !== null) {
      const failure = new OperatorError(`authorization was not granted at Intuit (${denied}); run \`qbhealth connect\` again and approve the app`, ExitCode.probeFailing);
      settle?.reject(failure);
      return page(res, 403, 'Not connected', `Intuit reported "${denied}". Nothing was stored; run qbhealth connect again to retry.`);
    }
    const code = params.get('code');
    const realmId = params.get('realmId');
    if (!code || !realmId || !/^\d{1,32}$/.test(realmId)) {
      return page(res, 400, 'Incomplete callback', 'The callback needs a code and a numeric realmId. Start again from the URL qbhealth connect printed.');
    }
    if (!exchange) {
      exchange = opts.exchange({ callbackUrl: url.toString(), code, realmId });
      exchange.then((v) => settle?.resolve(v), (e: unknown) => settle?.reject(e));
    }
    let outcome: T;
    try {
      outcome = await exchange;
    } catch (err) {
      // The exchange's failure reaches the command through `result`; the browser gets the
      // operator-facing message, and nothing more for an unexpected error.
      return page(res, 502, 'Not connected', err instanceof OperatorError ? err.message : 'The exchange failed; see the terminal running qbhealth connect.');
    }
    return page(res, 200, 'Connected', opts.describe(outcome));
  };

  const servers: Server[] = [];
  const close = (): Promise<void> =>
    Promise.all(
      servers.map(
        (server) =>
          new Promise<void>((resolve, reject) => {
            if (!server.listening) return resolve();
            server.close((err) => (err ? reject(err) : resolve()));
            server.closeIdleConnections();
          }),
      ),
    ).then(() => undefined);
  const addresses: string[] = [];
  for (const host of hostsFor(address.host)) {
    const server = createServer((req, res) => {
      handle(req, res).catch((err: unknown) => {
        settle?.reject(err);
        if (!res.headersSent) page(res, 500, 'Failed', 'qbhealth connect failed; see its terminal.');
        else res.destroy(coerceError(err));
      });
    });
    servers.push(server);
    try {
      addresses.push(await listen(server, { host, port: address.port }));
    } catch (err) {
      await close();
      throw err;
    }
  }
  return {
    addresses,
    result,
    get exchanging() {
      return exchange !== undefined;
    },
    close,
  };
}

/**
 * `localhost` is both 127.0.0.1 and ::1, and a browser may try either: listen on each loopback
 * the machine has (listen('localhost') would pick just one of them).
 */
function hostsFor(host: string): string[] {
  if (host !== 'localhost') return [host];
  const hasV6Loopback = Object.values(os.networkInterfaces()).some((list) => list?.some((i) => i.internal && i.family === 'IPv6' && i.address === '::1'));
  return hasV6Loopback ? ['127.0.0.1', '::1'] : ['127.0.0.1'];
}
