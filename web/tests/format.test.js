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

test('lead times and durations read in the chosen language', async () => {
  const { setLanguage } = await import('../lib/i18n.js');
  const { fmtDuration } = await import('../lib/format.js');
  setLanguage('de', { keep: false });
  assert.equal(leadText(86_400), '24 Stunden');
  assert.equal(leadText(3600), '1 Stunde');
  assert.match(fmtDuration(3_900_000), /^1 Std\.?,? 5 Min\.?$/);
  setLanguage('es', { keep: false });
  assert.equal(leadText(86_400), '24 horas');
  assert.equal(leadText(5400), '90 minutos');
  setLanguage('en', { keep: false });
  assert.equal(leadText(86_400), '24 hours');
});
