// Unit tests of the verification code's commit-then-reveal exchange (call/verify.js).
// Run with `node --test web/tests/` (the server's test suite runs them).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Verification, VerificationHistory, codeOf, commitmentOf, fromHex, fingerprintOf } from '../call/verify.js';

const FP_A = 'sha-256 0A:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:01';
const FP_B = 'sha-256 F0:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:02';
const FP_M1 = 'sha-256 51:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:03';
const FP_M2 = 'sha-256 52:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:04';

/** Deterministic nonces: byte `seed` then a counter, so every run is the same run. */
function nonces(seed) {
  let i = 0;
  return () => {
    i += 1;
    const n = new Uint8Array(32);
    n[0] = seed;
    n[1] = i;
    return n;
  };
}

/** Two sides wired to each other through queues; resolves when both are done or failed. */
async function run(a, b) {
  const inbox = { a: [], b: [] };
  a.send = (m) => inbox.b.push(structuredClone(m));
  b.send = (m) => inbox.a.push(structuredClone(m));
  await a.start();
  await b.start();
  for (let steps = 0; steps < 10; steps += 1) {
    while (inbox.a.length) await a.receive(inbox.a.shift());
    while (inbox.b.length) await b.receive(inbox.b.shift());
  }
}

function side(local, remote, seed) {
  return new Verification({ localFingerprint: local, remoteFingerprint: remote, send: () => {}, nonce: nonces(seed), timeoutMs: 0 });
}

test('both sides get the same code, which covers both fingerprints and both nonces', async () => {
  const a = side(FP_A, FP_B, 1);
  const b = side(FP_B, FP_A, 2);
  await run(a, b);
  assert.equal(a.role, 'initiator', 'the smaller fingerprint commits');
  assert.equal(b.role, 'responder');
  assert.equal(a.state, 'done');
  assert.equal(b.state, 'done');
  assert.match(a.code, /^\d{3} \d{3}$/);
  assert.equal(a.code, b.code);
  const ta = a.transcript();
  const tb = b.transcript();
  assert.equal(ta.localNonce, tb.remoteNonce);
  assert.equal(tb.localNonce, ta.remoteNonce);
  assert.equal(ta.commitment, await commitmentOf(fromHex(ta.localNonce)));
  assert.equal(a.code, await codeOf(FP_A, FP_B, fromHex(ta.localNonce), fromHex(tb.localNonce)));
  // Another responder nonce, another code: the code is not a function of the certificates.
  const b2 = side(FP_B, FP_A, 3);
  const a2 = side(FP_A, FP_B, 1);
  await run(a2, b2);
  assert.notEqual(a2.code, a.code);
});

test('roles come from the fingerprints, whoever starts', async () => {
  const b = side(FP_B, FP_A, 2);
  const a = side(FP_A, FP_B, 1);
  await run(b, a);
  assert.equal(a.role, 'initiator');
  assert.equal(a.code, b.code);
});

test('the responder gives its nonce only after a commitment, and the initiator reveals only after the nonce', async () => {
  const sent = [];
  const b = new Verification({ localFingerprint: FP_B, remoteFingerprint: FP_A, send: (m) => sent.push(m), nonce: nonces(2), timeoutMs: 0 });
  await b.start();
  assert.deepEqual(sent, [], 'nothing before the commitment');
  const a = new Verification({ localFingerprint: FP_A, remoteFingerprint: FP_B, send: (m) => sent.push(m), nonce: nonces(1), timeoutMs: 0 });
  await a.start();
  assert.deepEqual(sent.map((m) => m.type), ['commit']);
  assert.equal(sent[0].n, undefined, 'the commitment hides the nonce');
  await b.receive(sent[0]);
  assert.deepEqual(sent.map((m) => m.type), ['commit', 'nonce']);
  await a.receive(sent[1]);
  assert.deepEqual(sent.map((m) => m.type), ['commit', 'nonce', 'reveal']);
});

test('a reveal that does not match its commitment gives no code', async () => {
  const sent = [];
  const a = new Verification({ localFingerprint: FP_A, remoteFingerprint: FP_B, send: (m) => sent.push(m), nonce: nonces(1), timeoutMs: 0 });
  let failed = null;
  const b = new Verification({ localFingerprint: FP_B, remoteFingerprint: FP_A, send: (m) => sent.push(m), nonce: nonces(2), failed: (why) => { failed = why; }, timeoutMs: 0 });
  await a.start();
  await b.receive(sent[0]);
  // A different nonce than the one committed to (a man in the middle changing his mind).
  await b.receive({ type: 'reveal', v: 1, n: '11'.repeat(32) });
  assert.equal(b.state, 'failed');
  assert.equal(b.code, null);
  assert.match(failed, /commitment/);
});

test('out-of-order and repeated messages end the exchange without a code', async () => {
  const cases = [
    // The initiator never takes a commitment, a reveal, or a second nonce.
    [FP_A, FP_B, [{ type: 'commit', v: 1, c: '00'.repeat(32) }]],
    [FP_A, FP_B, [{ type: 'reveal', v: 1, n: '00'.repeat(32) }]],
    // The responder never takes a nonce, or a reveal before a commitment.
    [FP_B, FP_A, [{ type: 'nonce', v: 1, n: '00'.repeat(32) }]],
    [FP_B, FP_A, [{ type: 'reveal', v: 1, n: '00'.repeat(32) }]],
    [FP_B, FP_A, [{ type: 'commit', v: 1, c: 'zz' }]],
  ];
  for (const [local, remote, msgs] of cases) {
    const v = side(local, remote, 9);
    await v.start();
    for (const m of msgs) await v.receive(m);
    assert.equal(v.state, 'failed', JSON.stringify(msgs));
    assert.equal(v.code, null);
  }
  const a = side(FP_A, FP_B, 1);
  await a.start();
  await a.receive({ type: 'nonce', v: 1, n: '22'.repeat(32) });
  const first = a.code;
  assert.ok(first);
  await a.receive({ type: 'nonce', v: 1, n: '33'.repeat(32) });
  assert.equal(a.code, first, 'a second nonce cannot re-roll the code');
});

test('a man in the middle who forwards the exchange unchanged shows different codes', async () => {
  // Alice <-> M <-> Bob, M with a certificate of his own on each side, passing the
  // verification messages straight through.
  const alice = side(FP_A, FP_M1, 1);
  const bob = side(FP_B, FP_M2, 2);
  const toAlice = [];
  const toBob = [];
  alice.send = (m) => toBob.push(m);
  bob.send = (m) => toAlice.push(m);
  await alice.start();
  await bob.start();
  for (let i = 0; i < 10; i += 1) {
    while (toAlice.length) await alice.receive(toAlice.shift());
    while (toBob.length) await bob.receive(toBob.shift());
  }
  assert.equal(alice.state, 'done');
  assert.equal(bob.state, 'done', 'the exchange itself goes through');
  assert.notEqual(alice.code, bob.code, 'but the codes cover different certificates');
});

test('a man in the middle cannot steer a run: 500 tries, no match', async () => {
  // Within one run: he finishes with Bob first (Bob's code is then fixed), then answers
  // Alice's commitment with a nonce of his choosing. Alice's code still depends on her own
  // nonce, which he learns only after his answer is sent, and she takes no second answer.
  let matches = 0;
  for (let t = 0; t < 500; t += 1) {
    const bob = side(FP_B, FP_M2, 2 + (t % 200));
    const m2 = side(FP_M2, FP_B, 100);
    await run(m2, bob);
    const alice = new Verification({ localFingerprint: FP_A, remoteFingerprint: FP_M1, send: () => {}, nonce: nonces((t * 7) % 256), timeoutMs: 0 });
    const sent = [];
    alice.send = (m) => sent.push(m);
    await alice.start();
    const mNonce = new Uint8Array(32);
    mNonce[0] = t % 256;
    mNonce[1] = t >> 8;
    await alice.receive({ type: 'nonce', v: 1, n: [...mNonce].map((b) => b.toString(16).padStart(2, '0')).join('') });
    if (alice.code === bob.code) matches += 1;
  }
  assert.equal(matches, 0);
});

test('fingerprints: exactly one per SDP, or none', () => {
  const one = 'v=0\r\na=fingerprint:sha-256 ab:cd\r\nm=audio\r\na=fingerprint:SHA-256 AB:CD\r\n';
  assert.equal(fingerprintOf(one), 'sha-256 AB:CD');
  const two = 'v=0\r\na=fingerprint:sha-256 AB:CD\r\na=fingerprint:sha-256 EF:01\r\n';
  assert.equal(fingerprintOf(two), null);
  assert.equal(fingerprintOf(''), null);
  const v = new Verification({ localFingerprint: null, remoteFingerprint: FP_B, send: () => {} });
  assert.equal(v.state, 'unavailable');
});

test('a run whose other side stops answering fails after its timeout', async () => {
  // The man in the middle as initiator learns the responder's code when its nonce arrives,
  // and could withhold his reveal when it does not suit him: the responder then fails.
  const sent = [];
  let failed = null;
  const bob = new Verification({ localFingerprint: FP_B, remoteFingerprint: FP_M2, send: (m) => sent.push(m), nonce: nonces(2), failed: (why) => { failed = why; }, timeoutMs: 50 });
  await bob.start();
  await bob.receive({ type: 'commit', v: 1, c: await commitmentOf(new Uint8Array(32)) });
  assert.equal(sent[0].type, 'nonce');
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(bob.state, 'failed');
  assert.match(failed, /in time/);
  assert.equal(bob.code, null);
  // A reveal that comes too late changes nothing.
  await bob.receive({ type: 'reveal', v: 1, n: '00'.repeat(32) });
  assert.equal(bob.code, null);
});

test('every run broken off in a call is counted, and an honest rebuild is not', async () => {
  const honest = new VerificationHistory();
  const one = side(FP_A, FP_B, 1);
  const other = side(FP_B, FP_A, 2);
  honest.begin(one);
  await run(one, other);
  honest.finish();
  // The connection is rebuilt (a reload): a new run, the first one had finished.
  honest.begin(side(FP_A, FP_B, 3));
  assert.equal(honest.interrupted, 0);
  assert.equal(honest.suspicious, false);

  // A man in the middle aborting runs until he likes a code: each abort shows.
  const attacked = new VerificationHistory();
  for (let i = 0; i < 3; i += 1) {
    const v = side(FP_B, FP_M2, 10 + i);
    attacked.begin(v);
    await v.start();
    await v.receive({ type: 'commit', v: 1, c: await commitmentOf(new Uint8Array(32)) });
    // ... no reveal: he rebuilds the connection instead.
  }
  assert.equal(attacked.interrupted, 2, 'two earlier runs never finished');
  assert.equal(attacked.suspicious, true);
  const failedRun = side(FP_B, FP_M2, 20);
  attacked.begin(failedRun);
  await failedRun.start();
  failedRun.fail('a reveal that does not match');
  attacked.fail();
  assert.equal(attacked.interrupted, 4, 'a failed run counts too');
});

test('the test vector of web/README.md: two SDPs and two nonces in, the code out', async () => {
  const { readFile } = await import('node:fs/promises');
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const block = (info) => {
    const m = readme.match(new RegExp('```' + info + '\\n([\\s\\S]*?)```'));
    assert.ok(m, `web/README.md has a \`\`\`${info} block`);
    // The blocks sit in a list item: take off its indentation.
    return m[1].split('\n').map((l) => l.replace(/^ {2}/, '')).join('\n');
  };
  const sdpA = block('sdp side-a');
  const sdpB = block('sdp side-b');
  const vector = Object.fromEntries(block('text vector').trim().split('\n').map((l) => {
    const at = l.indexOf(': ');
    return [l.slice(0, at).trim(), l.slice(at + 2).trim()];
  }));
  const fpA = fingerprintOf(sdpA);
  const fpB = fingerprintOf(sdpB);
  assert.equal(fpA, vector['fingerprint A']);
  assert.equal(fpB, vector['fingerprint B']);
  const nI = fromHex(vector['initiator nonce nI']);
  const nR = fromHex(vector['responder nonce nR']);
  assert.equal(await commitmentOf(nI), vector['commitment c']);
  const [fpI, fpR] = vector.initiator === 'A' ? [fpA, fpB] : [fpB, fpA];
  assert.equal(await codeOf(fpI, fpR, nI, nR), vector.code);
  // And the whole exchange, as two clients run it with these nonces.
  const nonceOf = (fp) => () => (fp === fpI ? nI : nR);
  const a = new Verification({ localFingerprint: fpA, remoteFingerprint: fpB, send: () => {}, nonce: nonceOf(fpA), timeoutMs: 0 });
  const b = new Verification({ localFingerprint: fpB, remoteFingerprint: fpA, send: () => {}, nonce: nonceOf(fpB), timeoutMs: 0 });
  await run(a, b);
  assert.equal((vector.initiator === 'A' ? a : b).role, 'initiator');
  assert.equal(a.code, vector.code);
  assert.equal(b.code, vector.code);
  assert.equal((vector.initiator === 'A' ? a : b).transcript().commitment, vector['commitment c']);
});
