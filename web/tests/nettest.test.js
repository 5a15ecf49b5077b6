// Unit tests of the network test's words (call/nettest.js): the figures a person and a
// therapist read. Run with `node --test web/tests/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { figures, verdictLabel, pathLabel, networkBadge } from '../call/nettest.js';

test('figures are short phrases in plain units', () => {
  assert.deepEqual(figures({ path: 'relay_tcp', rtt_ms: 24.6, packet_loss: 0.025, upload_kbps: 31500 }), [
    'Path: relay (TCP)', 'Round trip: 25 ms', 'Packet loss: 2.5%', 'Upload: 31.5 Mbit/s',
  ]);
  assert.deepEqual(figures({ upload_kbps: 420.4 }), ['Upload: 420 kbit/s']);
  assert.deepEqual(figures({ verdict: 'blocked', reason: 'no_relay' }), []);
});

test('verdicts and paths have words', () => {
  assert.equal(verdictLabel('ready'), 'Ready');
  assert.equal(verdictLabel('relay_only'), 'Ready, through the relay');
  assert.equal(verdictLabel('blocked'), 'Blocked');
  assert.equal(pathLabel('direct'), 'direct');
  assert.equal(pathLabel(undefined), 'none');
});

test('the lobby badge shows the verdict and figures, or that there was no check', () => {
  const h = (tag, attrs, ...children) => ({ tag, attrs, children });
  const text = (n) => (typeof n === 'string' ? n : n.children.map(text).join(''));
  const none = networkBadge(h, undefined);
  assert.equal(none.attrs.dataset.verdict, 'none');
  assert.match(text(none), /no connection check/);
  const b = networkBadge(h, { verdict: 'blocked', reason: 'no_relay', at: 1 });
  assert.equal(b.attrs.dataset.verdict, 'blocked');
  assert.match(text(b), /Connection check: Blocked/);
});
