// PM2 process file: `pm2 start ecosystem.config.js --env production`.
//
// Several daemons against one database are one monitor: they share the realms through PostgreSQL
// (leases, heartbeats, an alert outbox), so each realm is probed once per period and each alert is
// sent once, and a daemon that dies leaves its realms to the others. Two ways to run several:
//
// - On one host, PM2 cluster mode (below): the workers share PORT, so a load balancer polls one
//   address; `pm2 reload qbo-health-monitor` replaces them one at a time, each new worker saying
//   ready before the old one stops, and a stopping worker stops taking new connections at once, so
//   every poll is answered. `pm2 scale qbo-health-monitor N` adds or removes workers. Each worker is
//   its own fleet member (FLEET_INSTANCE_ID <hostname>:<PORT>/<NODE_APP_INSTANCE>) with its own
//   spool (SPOOL_DIR/<instance>). /metrics labels every series with monitor_instance.
//   The fork-mode alternative gives each instance its own port instead:
//     exec_mode: 'fork', instances: 2, increment_var: 'PORT'
//   (then poll each port; `pm2 reload` of a fork instance leaves its port closed while it restarts).
// - One daemon per host behind the load balancer: this file on each host with `instances: 1`, the
//   same DATABASE_URL, ALERT_WEBHOOK_URL and PROBE_SCHEDULE everywhere.
//
// The package is ESM ("type": "module"). PM2 require()s this file and reads `.apps`; Node >= 20.19
// require()s an ES module as its namespace, so a named `apps` export is what PM2 finds
// (a `module.exports` here would be a syntax error, and `export default` would be ignored).
import { readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';

/** How long the daemon awaits a token refresh already sent (src/quickbooks/token-store.ts REFRESH_ANSWER_TIMEOUT_MS). */
export const REFRESH_ANSWER_TIMEOUT_MS = 15_000;
/** Webhook deliveries still in flight (the daemon drains them 5 s), the final spool and log writes. */
export const SHUTDOWN_FLUSH_MS = 5_000;

/** PROBE_TIMEOUT_MS as the daemon will read it: the environment over ./.env, default 10 s. */
function probeTimeoutMs() {
  let file = {};
  try {
    file = parseEnv(readFileSync('.env', 'utf8'));
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  const value = Number((process.env.PROBE_TIMEOUT_MS ?? file.PROBE_TIMEOUT_MS ?? '10000').trim());
  return Number.isInteger(value) && value > 0 ? value : 10_000;
}

export const apps = [
  {
    name: 'qbo-health-monitor',
    script: 'dist/main.js',
    exec_mode: 'cluster',
    instances: 2,
    // The daemon sends 'ready' only after migrations, the schema check and the health server
    // are up; PM2 waits for it instead of assuming success at spawn.
    wait_ready: true,
    listen_timeout: 60_000,
    // PM2 sends SIGINT, then SIGKILL after kill_timeout, derived from PROBE_TIMEOUT_MS so that a
    // longer probe deadline can never be cut off: the in-flight probe, plus a token refresh Intuit
    // has yet to answer (awaited once sent: the stored refresh token is already spent), plus the
    // final flush. 30 s with the default 10 s deadline. Restart with `pm2 delete` + `pm2 start`
    // after changing PROBE_TIMEOUT_MS (a `pm2 restart` keeps the old kill_timeout).
    kill_timeout: probeTimeoutMs() + REFRESH_ANSWER_TIMEOUT_MS + SHUTDOWN_FLUSH_MS,
    // 78 = configuration invalid: restarting cannot fix it, so PM2 must not loop on it.
    stop_exit_codes: [78],
    // 75 (database unreachable) and crashes are retried with growing delays.
    exp_backoff_restart_delay: 1_000,
    max_memory_restart: '300M',
    // No `time` / `log_date_format`: a prefix would break the JSON lines (pino adds `time`).
    merge_logs: true,
    env: {
      NODE_ENV: 'development',
    },
    env_production: {
      NODE_ENV: 'production',
    },
  },
];
