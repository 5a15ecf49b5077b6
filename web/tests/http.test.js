// Unit tests of the HTTP layer (lib/http.js): a service away for a moment is waited out for
// reads, never for changes, and the page is told. Run with `node --test web/tests/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request, onServiceTrouble, isTransient, ApiError } from '../lib/http.js';

function problem(status, code, retryAfter) {
  const headers = { 'content-type': 'application/problem+json' };
  if (retryAfter !== undefined) headers['retry-after'] = String(retryAfter);
  return new Response(JSON.stringify({ code, detail: code, status }), { status, headers });
}

function ok(body) {
  return new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } });
}

/** Answer fetches in turn; record what was asked. */
function serve(answers) {
  const asked = [];
  globalThis.fetch = async (url, init) => {
    asked.push(`${init.method} ${url}`);
    const next = answers.shift();
    if (next instanceof Error) throw next;
    return next;
  };
  return asked;
}

test('a read waits out a database away for a moment, and the page is told while it lasts', async () => {
  const asked = serve([
    problem(503, 'database_unavailable', 0),
    problem(503, 'database_unavailable', 0),
    ok({ id: 'me' }),
  ]);
  const told = [];
  const off = onServiceTrouble((on) => told.push(on));
  const out = await request('/me');
  off();
  assert.deepEqual(out, { id: 'me' });
  assert.deepEqual(asked, ['GET /api/v1/me', 'GET /api/v1/me', 'GET /api/v1/me']);
  assert.deepEqual(told, [true, false], 'trouble, then back');
});

test('a read waits out a network cut too', async () => {
  const asked = serve([new TypeError('fetch failed'), ok([])]);
  assert.deepEqual(await request('/appointments'), []);
  assert.equal(asked.length, 2);
});

test('a change is never sent twice by itself: the error says nothing was changed', async () => {
  const asked = serve([problem(503, 'database_unavailable', 2), ok({})]);
  const told = [];
  const off = onServiceTrouble((on) => told.push(on));
  await assert.rejects(
    request('/appointments', { method: 'POST', body: { kind: 'session' } }),
    (err) => err instanceof ApiError && err.code === 'database_unavailable' && isTransient(err) && err.retryAfter === '2',
  );
  off();
  assert.equal(asked.length, 1, 'sent once');
  assert.deepEqual(told, [true]);
  // The next answer that comes says the service is back.
  serve([ok({})]);
  const told2 = [];
  const off2 = onServiceTrouble((on) => told2.push(on));
  await request('/me');
  off2();
  assert.deepEqual(told2, [false]);
});

test('a refusal is not retried, and a read gives up after about twenty seconds of tries', async () => {
  const asked = serve([problem(404, 'not_found')]);
  await assert.rejects(request('/appointments/x'), (err) => err.status === 404 && !isTransient(err));
  assert.equal(asked.length, 1);
  const gaveUp = serve([problem(503, 'timeout', 0), problem(503, 'timeout', 0)]);
  await assert.rejects(request('/me', { retries: 1 }), (err) => err.code === 'timeout');
  assert.equal(gaveUp.length, 2);
});
