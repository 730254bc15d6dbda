import { randomUUID } from 'node:crypto';
import type { ProbeOutcome } from '../../src/probe/prober.js';

/** What a stand-in prober answers for a realm whose connection works. */
export function passOutcome(realmId: string, latencyMs = 1): ProbeOutcome {
  return {
    result: { probeId: randomUUID(), realmId, checkedAt: new Date(), connected: true, status: 'pass', errorCode: 'ok', error: undefined, httpStatus: 200, latencyMs, intuitTid: undefined, refreshTokenExpiresAt: undefined, companyName: undefined },
  } as ProbeOutcome;
}
