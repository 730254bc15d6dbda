/**
 * A member's share of the realms while PostgreSQL is away and nothing can be claimed: the realms
 * are divided among the members it last saw live by rendezvous hashing (each realm goes to the
 * member whose hash of member and realm is highest). Every member that saw the same members
 * computes the same division, so each realm is probed by exactly one of them, and a member that
 * joins or leaves moves only its own realms. (Members that saw the fleet differently, one joining
 * or dying just before the outage, may both take a realm.) (A division by who probed each realm
 * last cannot be made alike on every member: each read the fleet's view at another instant.)
 */
import { createHash } from 'node:crypto';

function weight(memberId: string, realmId: string): bigint {
  return createHash('sha1').update(memberId).update('\0').update(realmId).digest().readBigUInt64BE(0);
}

/** The realms among `realmIds` that fall to `self` when divided among `members` (self counts whether listed or not). */
export function shareOf(realmIds: readonly string[], members: readonly string[], self: string): string[] {
  const all = members.includes(self) ? members : [...members, self];
  return realmIds.filter((realmId) => {
    let best = self;
    let bestWeight = weight(self, realmId);
    for (const m of all) {
      if (m === self) continue;
      const w = weight(m, realmId);
      // Ties (never in practice) go to the smaller id, alike on every member.
      if (w > bestWeight || (w === bestWeight && m < best)) {
        best = m;
        bestWeight = w;
      }
    }
    return best === self;
  });
}
