/** `qbhealth connect` (OAuth authorization with a one-shot callback) and `qbhealth disconnect` (revoke). */
import { randomBytes } from 'node:crypto';
import { ExitCode, OperatorError } from '../errors.js';
import { fetchCompanyInfo } from '../quickbooks/api.js';
import { parseListenAddress, startCallbackServer, type CallbackParams } from '../quickbooks/callback-server.js';
import type { TokenSet } from '../quickbooks/oauth.js';
import { ErrorCode, IntuitFailure } from '../quickbooks/outcome.js';
import { deadlineSignal } from '../deadline.js';
import { writeLine, type Command } from './command.js';
import { databaseFailure, days, intuitExitCode, realmOption, requireRealm } from './qbo-commands.js';
import { withRuntime, type Runtime } from './runtime.js';

export const DEFAULT_CONNECT_TIMEOUT_SECONDS = 600;

interface Connected {
  readonly realmId: string;
  readonly tokens: TokenSet;
  readonly companyName: string | undefined;
  /** CompanyInfo failed after the tokens were stored: connected, but not yet seen working. */
  readonly companyFailure: IntuitFailure | undefined;
}

/** The one exchange of the authorization code: tokens stored first, then CompanyInfo names the company. */
async function exchange(rt: Runtime, params: CallbackParams): Promise<Connected> {
  const { config, oauth, store } = rt;
  let tokens: TokenSet;
  try {
    tokens = await oauth.exchangeCode(params.callbackUrl, deadlineSignal(config.probeTimeoutMs));
  } catch (err) {
    if (!(err instanceof IntuitFailure)) throw err;
    const why =
      err.code === ErrorCode.authInvalidGrant
        ? 'Intuit refused the authorization code (it is single-use and expires within minutes)'
        : `the authorization code exchange failed: ${err.message}`;
    throw new OperatorError(`${why}; nothing was stored. Run \`qbhealth connect\` again`, intuitExitCode(err), { cause: err });
  }
  try {
    await store.save(params.realmId, config.qboEnvironment, tokens);
  } catch (err) {
    throw databaseFailure(err) ?? err;
  }
  let companyName: string | undefined;
  let companyFailure: IntuitFailure | undefined;
  try {
    companyName = (await fetchCompanyInfo({
      baseUrl: config.qboApiBaseUrl,
      realmId: params.realmId,
      accessToken: tokens.accessToken,
      signal: deadlineSignal(config.probeTimeoutMs),
    })).companyName;
  } catch (err) {
    if (!(err instanceof IntuitFailure)) throw err;
    // Reported to the operator (exit 1 with the reason) once the browser has its answer.
    companyFailure = err;
  }
  if (companyName !== undefined) {
    try {
      await store.setCompanyName(params.realmId, companyName);
    } catch (err) {
      throw databaseFailure(err) ?? err;
    }
  }
  return { realmId: params.realmId, tokens, companyName, companyFailure };
}

function positiveSeconds(value: string | boolean | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > 86_400) {
    throw new OperatorError('--timeout must be a whole number of seconds between 1 and 86400', ExitCode.usage);
  }
  return n;
}

export const connectCommand: Command = {
  name: 'connect',
  summary: 'authorize the app for a QuickBooks company in a browser and store its tokens',
  description:
    'Prints the Intuit authorization URL, then listens on QBO_REDIRECT_URI for Intuit\'s redirect. The callback must ' +
    'carry the random `state` of this run; its single-use code is exchanged exactly once, even if the browser repeats ' +
    'the request. The tokens are stored encrypted, CompanyInfo is fetched to confirm the connection, and the realm and ' +
    'company name are printed. The redirect URI must be registered for the app at developer.intuit.com. Behind a TLS ' +
    'proxy (an https redirect URI), pass the address the proxy forwards to with --listen.',
  options: {
    listen: { type: 'string', valueName: 'HOST:PORT', description: 'where to listen for the callback (default: QBO_REDIRECT_URI\'s host and port)' },
    timeout: { type: 'string', valueName: 'SECONDS', description: `how long to wait for the callback (default ${DEFAULT_CONNECT_TIMEOUT_SECONDS})` },
  },
  exitCodes: [
    [0, 'connected: tokens stored and CompanyInfo answered'],
    [1, 'consent declined, Intuit refused the code, or CompanyInfo failed after the tokens were stored'],
    [2, 'usage: a malformed --listen or --timeout'],
    [65, 'the database schema is incomplete; run `qbhealth migrate`'],
    [75, 'no callback before --timeout, the port is in use, or PostgreSQL or Intuit unreachable; retry'],
    [78, 'configuration invalid (including an https QBO_REDIRECT_URI without --listen)'],
  ],
  run: (io, values) => {
    const timeoutSeconds = positiveSeconds(values.timeout, DEFAULT_CONNECT_TIMEOUT_SECONDS);
    const listen = typeof values.listen === 'string' ? parseListenAddress(values.listen) : undefined;
    if (values.listen !== undefined && !listen) {
      throw new OperatorError(`--listen must be HOST:PORT, [IPv6]:PORT or :PORT (got "${String(values.listen)}")`, ExitCode.usage);
    }
    return withRuntime(io, async (rt) => {
      const { config, oauth } = rt;
      const state = randomBytes(24).toString('base64url');
      const server = await startCallbackServer<Connected>({
        redirectUri: config.qboRedirectUri,
        listen,
        state,
        exchange: (params) => {
          io.secrets.add(params.code);
          return exchange(rt, params);
        },
        describe: (c) =>
          c.companyName !== undefined
            ? `QuickBooks company "${c.companyName}" (realm ${c.realmId}) is connected to the health monitor. You can close this tab.`
            : `Realm ${c.realmId}: tokens stored, but CompanyInfo failed (${c.companyFailure?.code ?? 'unknown'}). See the terminal.`,
        onRejected: (reason) => writeLine(io.stderr, io.secrets, `qbhealth connect: ${reason}`),
      });
      let connected: Connected;
      try {
        writeLine(io.stdout, io.secrets, 'Open this URL in a browser signed in to QuickBooks and approve the app:');
        writeLine(io.stdout, io.secrets);
        writeLine(io.stdout, io.secrets, `  ${oauth.authorizeUri(state)}`);
        writeLine(io.stdout, io.secrets);
        writeLine(
          io.stdout,
          io.secrets,
          `Waiting up to ${timeoutSeconds} s for Intuit to redirect to ${config.qboRedirectUri} (listening on ${server.addresses.join(', ')}) ...`,
        );
        connected = await waitForCallback(server.result, timeoutSeconds, () => server.exchanging);
      } finally {
        await server.close();
      }
      const environment = config.qboEnvironment;
      if (connected.companyFailure) {
        writeLine(io.stdout, io.secrets, `stored tokens for realm ${connected.realmId} (${environment})`);
        throw new OperatorError(
          `the tokens are stored, but CompanyInfo failed: ${connected.companyFailure.message}. Run \`qbhealth probe --realm-id ${connected.realmId}\` to check again`,
          ExitCode.probeFailing,
          { cause: connected.companyFailure },
        );
      }
      writeLine(io.stdout, io.secrets, `connected realm ${connected.realmId} (${environment}): "${connected.companyName ?? ''}"`);
      writeLine(io.stdout, io.secrets, `  refresh token expires in ${days(connected.tokens.refreshTokenExpiresAt)}`);
      writeLine(io.stdout, io.secrets, `  hard expiry in ${days(connected.tokens.refreshTokenHardExpiresAt)}`);
      return ExitCode.ok;
    });
  },
};

/** Waits for the callback; the timeout only ends the wait while no exchange is running. */
function waitForCallback<T>(result: Promise<T>, timeoutSeconds: number, exchanging: () => boolean): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      if (exchanging()) return;
      reject(new OperatorError(`no callback from Intuit within ${timeoutSeconds} s; run \`qbhealth connect\` again (and check that QBO_REDIRECT_URI reaches this machine)`, ExitCode.temporaryFailure));
    }, timeoutSeconds * 1000);
    result.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

export const disconnectCommand: Command = {
  name: 'disconnect',
  summary: 'revoke a realm\'s tokens at Intuit and stop probing it',
  description:
    'Revokes the realm\'s refresh token at Intuit (which disconnects the app from that company) and marks the realm ' +
    '`disconnected`, so it is no longer probed. If Intuit cannot be reached, nothing changes and the command exits 75. ' +
    'If the app was already disconnected from QuickBooks and Intuit refuses the revocation, --skip-revoke marks the ' +
    'realm without calling Intuit. `qbhealth connect` connects it again.',
  options: {
    'realm-id': realmOption,
    'skip-revoke': { type: 'boolean', description: 'mark the realm disconnected without calling Intuit' },
  },
  exitCodes: [
    [0, 'revoked (or already invalid at Intuit) and marked disconnected, or it already was'],
    [1, 'the realm is not known, or Intuit refused the revocation (nothing changed)'],
    [2, 'usage: --realm-id missing or not numeric'],
    [65, 'the database schema is incomplete; run `qbhealth migrate`'],
    [75, 'PostgreSQL or Intuit unreachable; nothing changed, retry'],
    [78, 'configuration invalid'],
  ],
  run: (io, values) => {
    const realmId = requireRealm(values, 'disconnect');
    return withRuntime(io, async ({ store, oauth, config }) => {
      try {
        const realm = await store.get(realmId);
        if (!realm) throw new OperatorError(`realm ${realmId} is not known: nothing to disconnect`, ExitCode.probeFailing);
        const label = realm.companyName ? ` ("${realm.companyName}")` : '';
        if (realm.status === 'disconnected') {
          writeLine(io.stdout, io.secrets, `realm ${realmId}${label} is already disconnected`);
          return ExitCode.ok;
        }
        let how = 'tokens revoked at Intuit';
        if (values['skip-revoke'] === true) {
          how = 'not revoked at Intuit (--skip-revoke)';
        } else {
          try {
            await oauth.revoke(realm.refreshToken, deadlineSignal(config.probeTimeoutMs));
          } catch (err) {
            if (!(err instanceof IntuitFailure)) throw err;
            if (err.code !== ErrorCode.authInvalidGrant) {
              throw new OperatorError(
                `Intuit did not revoke the tokens: ${err.message}; realm ${realmId} is unchanged. Retry, or use --skip-revoke if the app is already disconnected in QuickBooks`,
                intuitExitCode(err),
                { cause: err },
              );
            }
            // The token is already dead at Intuit: the disconnection the operator asked for has happened.
            how = 'Intuit already considered the token invalid';
          }
        }
        await store.setStatus(realmId, 'disconnected', `qbhealth disconnect: ${how}`);
        writeLine(io.stdout, io.secrets, `disconnected realm ${realmId}${label}: ${how}; it is no longer probed (\`qbhealth connect\` reconnects it)`);
        return ExitCode.ok;
      } catch (err) {
        throw databaseFailure(err) ?? err;
      }
    });
  },
};
