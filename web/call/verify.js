// A short code both people can read to each other to check that no one sits in the middle
// of the call. Each side hashes the two DTLS certificate fingerprints (its own and the other
// side's, from the `a=fingerprint:` lines of the SDP), sorted so that both compute the same
// input. A machine in the middle would have to present its own certificate to each side,
// and the two sides would then see different codes.

/**
 * The one certificate fingerprint of an SDP, or null. Every `a=fingerprint:` line counts
 * (one per media section in a normal SDP, all the same): a browser may use another line than
 * the first, so SDP that carries two different fingerprints has no code at all rather than a
 * code for a certificate that may not be the one in use.
 */
export function fingerprintOf(sdp) {
  if (!sdp) return null;
  const seen = new Set();
  for (const m of sdp.matchAll(/^a=fingerprint:\s*(\S+)\s+([0-9A-Fa-f:]+)\s*$/gm)) {
    seen.add(`${m[1].toLowerCase()} ${m[2].toUpperCase()}`);
  }
  return seen.size === 1 ? [...seen][0] : null;
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
