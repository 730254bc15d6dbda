/**
 * `qbhealth simulator`: the loopback Intuit stand-in of the demo and the tests, run on its own so
 * an operator can rehearse the production steps (connect, import-tokens, probe, a revoked app, a
 * reconnect) against it before touching Intuit. It prints the QBO_* lines to paste and the control
 * endpoints, then serves until SIGINT or SIGTERM.
 */
import { basicCredentials } from '../log.js';
import { coerceError, ExitCode, OperatorError } from '../errors.js';
import { REALMS_PATH, SCENARIO_PATH, SCENARIOS, STATE_PATH, startSimulator, type Simulator } from '../simulator/simulator.js';
import { writeLine, type CliIO, type Command } from './command.js';
import { configProblemsError } from './errors.js';

export const DEFAULT_SIMULATOR_REALM = '9130357766';

function port(value: string | boolean | undefined): number {
  if (value === undefined) return 0;
  const n = typeof value === 'string' && /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 0 && n <= 65_535)) throw new OperatorError(`--port must be a port number from 0 to 65535 (got "${String(value)}")`, ExitCode.usage);
  return n;
}

function realmIds(value: string | boolean | undefined): string[] {
  if (value === undefined) return [DEFAULT_SIMULATOR_REALM];
  const ids = String(value).split(',').map((s) => s.trim());
  if (ids.some((id) => !/^\d{1,32}$/.test(id))) {
    throw new OperatorError(`--realm-id must be numeric company ids separated by commas (got "${String(value)}")`, ExitCode.usage);
  }
  return ids;
}

/**
 * The app keys the simulator accepts are the operator's own (from the environment or .env), so the
 * monitor pointed at it needs no other keys; the secret is taken from there only, never from argv
 * where `ps` shows it, and never printed.
 */
function appKeys(io: CliIO): { clientId: string; clientSecret: string } {
  const clientId = io.env.QBO_CLIENT_ID?.trim() ?? '';
  const clientSecret = io.env.QBO_CLIENT_SECRET?.trim() ?? '';
  if (clientSecret !== '') io.secrets.add(clientSecret, ...(clientId === '' ? [] : basicCredentials(clientId, clientSecret)));
  const problems = [
    ...(clientId === '' ? ['QBO_CLIENT_ID: is required; the Client ID the simulator accepts (the same one the monitor uses)'] : []),
    ...(clientSecret === '' ? ['QBO_CLIENT_SECRET: is required; the Client Secret the simulator accepts (the same one the monitor uses)'] : []),
  ];
  if (problems.length > 0) throw configProblemsError(problems);
  return { clientId, clientSecret };
}

async function listen(options: Parameters<typeof startSimulator>[0]): Promise<Simulator> {
  try {
    return await startSimulator(options);
  } catch (err) {
    const error = err as NodeJS.ErrnoException;
    const where = `${options.host ?? '127.0.0.1'}:${options.port ?? 0}`;
    if (error.code === 'EADDRINUSE') throw new OperatorError(`${where} is already in use: pick another --port`, ExitCode.temporaryFailure, { cause: err });
    if (error.code === 'EACCES') throw new OperatorError(`not allowed to listen on ${where}: use a --port above 1023`, ExitCode.configInvalid, { cause: err });
    if (error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND') {
      throw new OperatorError(`cannot listen on ${where}: no such local address (--host)`, ExitCode.usage, { cause: err });
    }
    throw new OperatorError(`cannot listen on ${where}: ${coerceError(err).message}`, ExitCode.temporaryFailure, { cause: err });
  }
}

function instructions(sim: Simulator, clientId: string): string[] {
  const companies = [...sim.realms()].map(([id, name]) => `${id} ("${name}")`).join(', ');
  const first = [...sim.realms().keys()][0] ?? DEFAULT_SIMULATOR_REALM;
  return [
    `Intuit simulator listening on ${sim.url}: Intuit's token, revoke, consent and CompanyInfo endpoints, on loopback; it never calls Intuit.`,
    `It accepts the app keys of this environment: QBO_CLIENT_ID=${clientId} and its QBO_CLIENT_SECRET (not shown).`,
    '',
    'Point the monitor and qbhealth at it with these lines (in their .env or environment), beside DATABASE_URL,',
    'TOKEN_ENCRYPTION_KEY and the same QBO_CLIENT_ID and QBO_CLIENT_SECRET:',
    '',
    `QBO_TOKEN_URL=${sim.tokenUrl}`,
    `QBO_API_BASE_URL=${sim.url}`,
    `QBO_REVOKE_URL=${sim.revokeUrl}`,
    `QBO_AUTHORIZE_URL=${sim.authorizeUrl}`,
    '',
    `Companies: ${companies}. Connect one as in production, either way:`,
    '  qbhealth connect',
    `      then open the URL it prints: the simulator approves at once for company ${first} (add &realm_id=ID for another)`,
    '      and redirects to QBO_REDIRECT_URI, where qbhealth connect is waiting',
    `  curl -s -X POST '${sim.url}${REALMS_PATH}?realm_id=${first}' | qbhealth import-tokens --realm-id ${first}`,
    '      registers the company afresh (another realm_id adds one; &company=NAME names it) and pipes its first refresh',
    '      token to import-tokens, never to the screen',
    '',
    `Switch what Intuit does (${SCENARIOS.join(', ')}):`,
    `  curl -X POST '${sim.url}${SCENARIO_PATH}?name=outage'`,
    `  curl ${sim.url}${STATE_PATH}      the scenario, counters and companies`,
    'A realm the monitor saw `revoked` stays reconnect_required after `healthy`, as with Intuit: reconnect it either way above.',
    '',
    'Ctrl-C (SIGINT) or SIGTERM stops it.',
  ];
}

/**
 * Resolves with the signal that asked to stop. This command runs until told to, so it listens for
 * the signals itself (cli.ts has no stop signal to give commands); both listeners go once one fires.
 */
function untilStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve(signal);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

export const simulatorCommand: Command = {
  name: 'simulator',
  summary: 'run the local Intuit simulator, to rehearse connect, import-tokens and probe against it',
  description:
    'Serves a stand-in for Intuit\'s OAuth token, revoke and consent endpoints and the CompanyInfo API on HOST:PORT ' +
    '(loopback by default), with the scenarios the demo uses (healthy, outage, throttled, revoked, ...). It accepts ' +
    'the app keys in QBO_CLIENT_ID and QBO_CLIENT_SECRET (environment or .env; the secret is never printed), prints ' +
    'the QBO_TOKEN_URL, QBO_API_BASE_URL, QBO_REVOKE_URL and QBO_AUTHORIZE_URL lines that point the monitor at it and ' +
    `the control endpoints: POST ${SCENARIO_PATH}?name=S switches the scenario, POST ${REALMS_PATH}?realm_id=R ` +
    `registers a company and answers its first refresh token (pipe it to \`qbhealth import-tokens\`), GET ${STATE_PATH} ` +
    'reports. The consent page approves at once and redirects to the redirect_uri it is given, so `qbhealth connect` ' +
    'completes with no browser login. Runs until SIGINT (Ctrl-C) or SIGTERM. Nothing here is secure: keep it on loopback.',
  options: {
    port: { type: 'string', valueName: 'N', description: 'the port to listen on (default 0: a free port, printed)' },
    host: { type: 'string', valueName: 'HOST', description: 'the address to listen on (default 127.0.0.1)' },
    'realm-id': { type: 'string', valueName: 'ID[,ID...]', description: `companies registered at start (default ${DEFAULT_SIMULATOR_REALM})` },
  },
  exitCodes: [
    [0, 'stopped by SIGINT or SIGTERM'],
    [2, 'usage: a malformed --port, --host or --realm-id'],
    [75, 'the port is in use; pick another --port'],
    [78, 'QBO_CLIENT_ID or QBO_CLIENT_SECRET missing'],
  ],
  run: async (io, values) => {
    const listenPort = port(values.port);
    const ids = realmIds(values['realm-id']);
    const host = typeof values.host === 'string' && values.host.trim() !== '' ? values.host.trim() : '127.0.0.1';
    const { clientId, clientSecret } = appKeys(io);
    const sim = await listen({ host, port: listenPort, clientId, clientSecret });
    const stopped = untilStopSignal();
    for (const id of ids) sim.addRealm(id, `Sandbox Company ${id}`);
    for (const line of instructions(sim, clientId)) writeLine(io.stdout, io.secrets, line);
    const signal = await stopped;
    await sim.close();
    writeLine(io.stdout, io.secrets, `${signal}: simulator stopped`);
    return ExitCode.ok;
  },
};
