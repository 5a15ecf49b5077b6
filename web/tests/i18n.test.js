// The message catalogs (web/locales) are complete: every key of the English catalog is in
// every other one and no other key is, each with the same {placeholders} and plural forms
// the language needs; and every t('key') the code calls exists. Run with
// `node --test tests/*.test.js` in web/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { CATALOGS, LANGUAGES, t, setLanguage, pick } from '../lib/i18n.js';

const placeholders = (v) => {
  const texts = typeof v === 'object' ? Object.values(v) : [v];
  return [...new Set(texts.flatMap((s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1])))].sort();
};

test('every catalog has exactly the English keys, with the same placeholders', () => {
  const en = CATALOGS.en;
  assert.deepEqual(LANGUAGES.map((l) => l.code).sort(), Object.keys(CATALOGS).sort());
  for (const [code, catalog] of Object.entries(CATALOGS)) {
    const missing = Object.keys(en).filter((k) => !(k in catalog));
    const extra = Object.keys(catalog).filter((k) => !(k in en));
    assert.deepEqual(missing, [], `${code}: missing keys`);
    assert.deepEqual(extra, [], `${code}: keys not in en`);
    for (const [key, value] of Object.entries(catalog)) {
      assert.ok(typeof value === 'string' || (value && typeof value.other === 'string'), `${code} ${key}: a string or plural forms`);
      assert.deepEqual(placeholders(value), placeholders(en[key]), `${code} ${key}: placeholders`);
      if (typeof value === 'object') {
        // Every plural category the language uses has its form.
        const needed = new Intl.PluralRules(code).resolvedOptions().pluralCategories;
        for (const cat of needed) assert.ok(typeof value[cat] === 'string' || cat === 'many', `${code} ${key}: plural form ${cat}`);
      }
      const texts = typeof value === 'object' ? Object.values(value) : [value];
      for (const s of texts) assert.ok(s.trim().length > 0, `${code} ${key}: empty`);
    }
  }
});

test('every key the code asks for is in the catalogs', async () => {
  const root = new URL('../', import.meta.url);
  const files = [];
  const walk = async (dir) => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.name === 'tests' || e.name === 'locales' || e.name === 'node_modules') continue;
      const u = new URL(e.name + (e.isDirectory() ? '/' : ''), dir);
      if (e.isDirectory()) await walk(u);
      else if (e.name.endsWith('.js')) files.push(u);
    }
  };
  await walk(root);
  const asked = new Set();
  for (const f of files) {
    const src = await readFile(f, 'utf8');
    for (const m of src.matchAll(/\bt\(\s*'([a-z_]+\.[a-z0-9_.]+)'/g)) asked.add(m[1]);
  }
  assert.ok(asked.size > 50, `found ${asked.size} keys in use`);
  const missing = [...asked].filter((k) => !(k in CATALOGS.en));
  assert.deepEqual(missing, [], 'keys used in the code but in no catalog');
});

test('placeholders and plural forms are filled in the chosen language', () => {
  setLanguage('de', { keep: false });
  assert.equal(t('signin.done', { name: 'Casey' }), 'Angemeldet als Casey.');
  assert.equal(t('settings.everywhere_done', { count: 1 }), 'Sie haben sich überall abgemeldet (eine Anmeldung).');
  assert.equal(t('settings.everywhere_done', { count: 3 }), 'Sie haben sich überall abgemeldet (3 Anmeldungen).');
  setLanguage('es', { keep: false });
  assert.equal(t('nav.settings'), 'Ajustes');
  setLanguage('en', { keep: false });
  assert.equal(t('banner.waiting', { count: 2, names: 'A, B' }), 'A, B are in the waiting room.');
});

test('the browser preference picks a supported language, else English', () => {
  assert.equal(pick(['de-AT', 'en']), 'de');
  assert.equal(pick(['fr-FR', 'es-MX']), 'es');
  assert.equal(pick(['fr-FR']), 'en');
  assert.equal(pick([]), 'en');
});
