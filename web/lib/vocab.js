// Directory vocabularies (specialisations, modalities) from the server, fetched once, and
// a short list of languages for the language filter.

import { publicApi } from './api.js';
import { languageName } from './format.js';
import { t, has } from './i18n.js';

let vocab = null;

export async function loadVocabulary() {
  if (!vocab) {
    vocab = publicApi('/therapists/vocabulary').catch((err) => {
      vocab = null;
      throw err;
    });
  }
  return vocab;
}

export function labelFor(list, slug) {
  const key = `vocab.${String(slug).toLowerCase()}`;
  if (has(key)) return t(key);
  const found = (list || []).find((x) => x.slug === slug || x.slug === String(slug).toLowerCase());
  return found ? found.label : String(slug).replace(/_/g, ' ');
}

// BCP 47 tags offered in the language filter; therapists' own tags are added to it.
export const COMMON_LANGUAGES = ['en', 'es', 'fr', 'de', 'it', 'pt', 'pt-BR', 'nl', 'pl', 'ro', 'ru', 'uk', 'tr', 'ar', 'fa', 'he', 'hi', 'ur', 'bn', 'pa', 'zh', 'ja', 'ko', 'vi', 'el', 'sv', 'da', 'no', 'fi', 'cy'];

export function languageOptions(extra = []) {
  const tags = [...new Set([...COMMON_LANGUAGES, ...extra])];
  return tags
    .map((t) => ({ value: t, label: languageName(t) }))
    .sort((a, b) => a.label.localeCompare(b.label));
}
