/**
 * Intuit's token endpoint through intuit-oauth, made safe for a daemon:
 *  - its `logging` stays off (it writes tokens to ./logs in plaintext);
 *  - its HTTP calls have no deadline of their own, so each call carries our AbortSignal and is
 *    raced against it: nothing outlives PROBE_TIMEOUT_MS;
 *  - its internal retries (3, with 1/2/4 s backoff) are turned off: within one probe's deadline
 *    they would turn a clear 503 into a vague timeout, and the schedule is the retry;
 *  - its errors become IntuitFailure with the contract's error codes, never carrying a token: the
 *    axios error underneath is kept only reduced (name, message, code, status), because it holds
 *    the request config with `Authorization: Basic base64(client_id:client_secret)` and the form
 *    body with the refresh token.
 */
import OAuthClient from 'intuit-oauth';
import { INTUIT_AUTHORIZE_URL } from '../config.js';
import { reduceError } from '../errors.js';
import { ErrorCode, IntuitFailure, classifyStatus, transportCode } from './outcome.js';

export interface IntuitOAuthConfig {
  readonly clientId: string;
  readonly clientSecret: string;
  readonly environment: 'sandbox' | 'production';
  readonly redirectUri: string;
  readonly tokenUrl: string;
  readonly revokeUrl: string;
  /** Intuit's consent page unless set (QBO_AUTHORIZE_URL: the simulator, a proxy). */
  readonly authorizeUrl?: string;
}

export interface TokenSet {
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly accessTokenExpiresAt: Date;
  /** Rolling expiry: moves forward with every refresh (x_refresh_token_expires_in). */
  readonly refreshTokenExpiresAt: Date;
  /** The 5-year limit no refresh extends (x_refresh_token_hard_expires_in), when Intuit sends it. */
  readonly refreshTokenHardExpiresAt: Date | undefined;
  readonly intuitTid: string | undefined;
}

export const QUICKBOOKS_SCOPE = 'com.intuit.quickbooks.accounting';

interface RawExchange {
  response?: { status?: number; data?: unknown; headers?: Record<string, unknown> };
  error?: unknown;
}

function headerTid(headers: Record<string, unknown> | undefined): string | undefined {
  const tid = headers?.intuit_tid ?? headers?.['intuit-tid'];
  return typeof tid === 'string' && tid !== '' ? tid : undefined;
}

function seconds(value: unknown): number | undefined {
  const n = typeof value === 'string' ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? n : undefined;
}

/** Rejects when `signal` aborts, whatever `work` does. */
export function raceSignal<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

export class IntuitOAuth {
  /** The client for the configured app and endpoints. */
  static fromConfig(config: {
    qboClientId: string;
    qboClientSecret: string;
    qboEnvironment: 'sandbox' | 'production';
    qboRedirectUri: string;
    qboTokenUrl: string;
    qboRevokeUrl: string;
    qboAuthorizeUrl: string;
  }): IntuitOAuth {
    return new IntuitOAuth({
      clientId: config.qboClientId,
      clientSecret: config.qboClientSecret,
      environment: config.qboEnvironment,
      redirectUri: config.qboRedirectUri,
      tokenUrl: config.qboTokenUrl,
      revokeUrl: config.qboRevokeUrl,
      authorizeUrl: config.qboAuthorizeUrl,
    });
  }

  constructor(
    private readonly config: IntuitOAuthConfig,
    private readonly now: () => Date = () => new Date(),
  ) {
    // intuit-oauth keeps its endpoints and retry policy on the class; one configuration per process.
    OAuthClient.tokenEndpoint = config.tokenUrl;
    OAuthClient.revokeEndpoint = config.revokeUrl;
    OAuthClient.authorizeEndpoint = config.authorizeUrl ?? INTUIT_AUTHORIZE_URL;
    OAuthClient.retryConfig = { ...OAuthClient.retryConfig, maxRetries: 0 };
  }

  /** A client per call: intuit-oauth keeps token state on the instance, and realms refresh concurrently. */
  private client(signal: AbortSignal, raw: RawExchange): OAuthClient {
    const client = new OAuthClient({
      clientId: this.config.clientId,
      clientSecret: this.config.clientSecret,
      environment: this.config.environment,
      redirectUri: this.config.redirectUri,
      logging: false,
      includeRefreshTokenHardExpiresIn: true,
    });
    const load = client.loadResponse.bind(client);
    // The only hook through which a deadline reaches its HTTP call (axios honours `signal`), and
    // where the raw status and body are seen before intuit-oauth folds them into a generic Error.
    client.loadResponse = (request: Record<string, unknown>) =>
      load({ ...request, signal }).then(
        (response: RawExchange['response']) => {
          raw.response = response;
          return response;
        },
        (err: unknown) => {
          raw.error = err;
          raw.response = (err as RawExchange).response;
          throw err;
        },
      );
    return client;
  }

  authorizeUri(state: string): string {
    return new OAuthClient({
      clientId: this.config.clientId,
      clientSecret: this.config.clientSecret,
      environment: this.config.environment,
      redirectUri: this.config.redirectUri,
      logging: false,
    }).authorizeUri({ scope: [QUICKBOOKS_SCOPE], state });
  }

  async refresh(refreshToken: string, signal: AbortSignal): Promise<TokenSet> {
    return this.tokenSet(await this.call('refresh', signal, (c) => c.refreshUsingToken(refreshToken)));
  }

  /** Exchanges the authorization code in the OAuth callback URL for tokens. */
  async exchangeCode(callbackUrl: string, signal: AbortSignal): Promise<TokenSet> {
    return this.tokenSet(await this.call('authorization code exchange', signal, (c) => c.createToken(callbackUrl)));
  }

  async revoke(token: string, signal: AbortSignal): Promise<void> {
    await this.call('revoke', signal, (c) => c.revoke({ refresh_token: token }));
  }

  /** One intuit-oauth call under the deadline; failures become IntuitFailure. */
  private async call(what: string, signal: AbortSignal, request: (client: OAuthClient) => Promise<unknown>): Promise<RawExchange> {
    const raw: RawExchange = {};
    try {
      await raceSignal(request(this.client(signal, raw)), signal);
    } catch (err) {
      throw this.failure(what, err, raw, signal);
    }
    return raw;
  }

  private tokenSet(raw: RawExchange): TokenSet {
    const body = raw.response?.data as Record<string, unknown> | undefined;
    const tid = headerTid(raw.response?.headers);
    const accessToken = body?.access_token;
    const refreshToken = body?.refresh_token;
    const expiresIn = seconds(body?.expires_in);
    const refreshExpiresIn = seconds(body?.x_refresh_token_expires_in);
    if (typeof accessToken !== 'string' || typeof refreshToken !== 'string' || !accessToken || !refreshToken || !expiresIn || !refreshExpiresIn) {
      throw new IntuitFailure(
        ErrorCode.badResponse,
        'Intuit token endpoint answered 2xx without access_token, refresh_token, expires_in and x_refresh_token_expires_in',
        raw.response?.status,
        tid,
      );
    }
    const at = this.now().getTime();
    const hard = seconds(body?.x_refresh_token_hard_expires_in);
    return {
      accessToken,
      refreshToken,
      accessTokenExpiresAt: new Date(at + expiresIn * 1000),
      refreshTokenExpiresAt: new Date(at + refreshExpiresIn * 1000),
      refreshTokenHardExpiresAt: hard ? new Date(at + hard * 1000) : undefined,
      intuitTid: tid,
    };
  }

  private failure(what: string, thrown: unknown, raw: RawExchange, signal: AbortSignal): IntuitFailure {
    if (thrown instanceof IntuitFailure) return thrown;
    const status = raw.response?.status;
    const tid = headerTid(raw.response?.headers);
    const cause = reduceError(raw.error ?? thrown);
    if (signal.aborted) {
      // The bound is the caller's (a probe's deadline, or a refresh's own once sent).
      return new IntuitFailure(ErrorCode.timeout, `Intuit ${what}: no answer in the time allowed`, undefined, tid, { cause });
    }
    if (status === undefined) {
      const code = transportCode(raw.error ?? thrown);
      if (code) return new IntuitFailure(ErrorCode.network, `Intuit ${what}: ${code} reaching the token endpoint`, undefined, tid, { cause });
      return new IntuitFailure(ErrorCode.badResponse, `Intuit ${what} failed: ${cause.message}`, undefined, tid, { cause });
    }
    const body = raw.response?.data as { error?: unknown; error_description?: unknown } | undefined;
    const oauthError = typeof body?.error === 'string' ? body.error : undefined;
    const description = typeof body?.error_description === 'string' ? ` (${body.error_description})` : '';
    if (oauthError === 'invalid_grant') {
      return new IntuitFailure(
        ErrorCode.authInvalidGrant,
        `Intuit rejected the refresh token (invalid_grant${description}): the app was disconnected, or the token expired or was superseded. Reconnect with \`qbhealth connect\``,
        status,
        tid,
      );
    }
    if (oauthError === 'invalid_client') {
      return new IntuitFailure(
        ErrorCode.authUnauthorized,
        `Intuit rejected the app's credentials (invalid_client${description}): check QBO_CLIENT_ID and QBO_CLIENT_SECRET`,
        status,
        tid,
      );
    }
    const code = classifyStatus(status);
    return new IntuitFailure(code, `Intuit ${what}: HTTP ${status}${oauthError ? ` ${oauthError}${description}` : ''}`, status, tid);
  }
}
