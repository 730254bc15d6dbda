// Preload (`node --import`) that runs a process with its wall clock QBHM_TEST_CLOCK_SKEW_MS ahead
// (30 s by default): Date.now() and `new Date()` are shifted; timers and performance.now(), which
// are monotonic, are not, as on a host whose clock is off.
const skew = Number(process.env.QBHM_TEST_CLOCK_SKEW_MS ?? 30_000);
const RealDate = Date;

class SkewedDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(RealDate.now() + skew);
    else super(...args);
  }

  static now() {
    return RealDate.now() + skew;
  }
}

globalThis.Date = SkewedDate;
