#!/usr/bin/env node
/** `qbhealth`: the operator's command line. The only place besides main.ts that touches `process`. */
import { readEnvironment } from './config.js';
import { runCli } from './cli/run.js';
import { SecretRegistry } from './log.js';

const secrets = new SecretRegistry();
let env;
try {
  env = readEnvironment(process.env, process.cwd());
} catch (err) {
  process.stderr.write(`qbhealth: ${(err as Error).message}\n`);
  process.exit(78);
}
process.exitCode = await runCli(process.argv.slice(2), {
  env,
  cwd: process.cwd(),
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  secrets,
});
