// Unit tests of lib/format.js. Run with `node --test tests/*.test.js` in web/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { leadText } from '../lib/format.js';

test('reminder lead times read in whole units, never as thousands of minutes', () => {
  assert.equal(leadText(86_400), '24 hours');
  assert.equal(leadText(3600), '1 hour');
  assert.equal(leadText(5400), '90 minutes');
  assert.equal(leadText(172_800), '2 days');
  assert.equal(leadText(60), '1 minute');
  assert.equal(leadText(75), '75 seconds');
});
