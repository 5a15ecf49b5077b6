// A short code both people can read to each other to check that no one sits in the middle
// of the call. Each side hashes the two DTLS certificate fingerprints (its own and the other
// side's, from the `a=fingerprint:` lines of the SDP), sorted so that both compute the same
// input. A machine in the middle would have to present its own certificate to each side,
// and the two sides would then see different codes.

export function fingerprintOf(sdp) {
  if (!sdp) return null;
  const m = /^a=fingerprint:\s*(\S+)\s+([0-9A-Fa-f:]+)\s*$/m.exec(sdp);
  return m ? `${m[1].toLowerCase()} ${m[2].toUpperCase()}` : null;
}

/** "123 456", or null when a fingerprint is missing. */
export async function verificationCode(localSdp, remoteSdp) {
  const a = fingerprintOf(localSdp);
  const b = fingerprintOf(remoteSdp);
  if (!a || !b || !(window.crypto && crypto.subtle)) return null;
  const input = [a, b].sort().join('\n');
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(input));
  const n = new DataView(digest).getUint32(0) % 1_000_000;
  const s = String(n).padStart(6, '0');
  return `${s.slice(0, 3)} ${s.slice(3)}`;
}
