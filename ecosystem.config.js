// PM2 process file: `pm2 start ecosystem.config.js --env production`.
// One daemon per database (fork mode, one instance): probing is coordinated through PostgreSQL.
//
// The package is ESM ("type": "module"). PM2 require()s this file and reads `.apps`; Node >= 20.19
// require()s an ES module as its namespace, so a named `apps` export is what PM2 finds
// (a `module.exports` here would be a syntax error, and `export default` would be ignored).
export const apps = [
  {
    name: 'qbo-health-monitor',
    script: 'dist/main.js',
    exec_mode: 'fork',
    instances: 1,
    // The daemon sends 'ready' only after migrations, the schema check and the health server
    // are up; PM2 waits for it instead of assuming success at spawn.
    wait_ready: true,
    listen_timeout: 60_000,
    // PM2 sends SIGINT, then SIGKILL after kill_timeout: above PROBE_TIMEOUT_MS (10 s), plus a
    // token refresh Intuit has yet to answer (awaited up to 15 s once sent: the stored refresh
    // token is already spent), plus flushing the spool and closing the pool.
    kill_timeout: 30_000,
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
