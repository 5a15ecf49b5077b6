// The therapist directory: filters (kept in the address so Back works), results, pages.

import { h, replace, field, select, notice, announce } from '../lib/dom.js';
import { publicApi, describeError } from '../lib/api.js';
import { loadVocabulary, labelFor, languageOptions } from '../lib/vocab.js';
import { languageName, pluralise } from '../lib/format.js';

const PER_PAGE = 12;

export async function render(ctx) {
  const { root, query } = ctx;
  const results = h('div', { id: 'directory-results', 'aria-busy': 'true' }, h('p', { class: 'loading' }, 'Loading therapists…'));
  const page = h('section', { class: 'page' },
    h('h1', {}, 'Find a therapist'),
    h('p', { class: 'lead' }, 'Take your time. Every therapist here offers sessions by video; some offer a free first consultation to see if you are a good fit.'));
  root.append(page);

  let vocab = { specialisations: [], modalities: [] };
  try {
    vocab = await loadVocabulary();
  } catch (err) {
    page.append(notice('error', describeError(err)));
  }
  if (!ctx.alive()) return;

  const state = {
    specialisation: query.get('specialisation') || '',
    modality: query.get('modality') || '',
    language: query.get('language') || '',
    free: query.get('free') === 'true',
    page: Math.max(1, Number(query.get('page')) || 1),
  };

  const spec = field('What would you like help with?', select(vocab.specialisations.map((t) => ({ value: t.slug, label: t.label })), { id: 'filter-specialisation', empty: 'Anything', value: state.specialisation }));
  const mod = field('Way of working', select(vocab.modalities.map((t) => ({ value: t.slug, label: t.label })), { id: 'filter-modality', empty: 'Any approach', value: state.modality }));
  const langs = languageOptions(state.language ? [state.language] : []);
  const lang = field('Language', select(langs, { id: 'filter-language', empty: 'Any language', value: state.language }));
  const free = h('input', { type: 'checkbox', id: 'filter-free', checked: state.free });
  const freeWrap = h('div', { class: 'check' }, free, h('label', { for: 'filter-free' }, 'Offers a free consultation'));
  const clearBtn = h('button', { type: 'button', class: 'button quiet small', id: 'filter-clear' }, 'Clear filters');

  const filters = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter therapists' }, spec.wrap, mod.wrap, lang.wrap, freeWrap, h('div', { class: 'field' }, clearBtn));
  filters.addEventListener('submit', (ev) => ev.preventDefault());
  page.append(filters, results);

  const syncUrl = () => {
    const p = new URLSearchParams();
    if (state.specialisation) p.set('specialisation', state.specialisation);
    if (state.modality) p.set('modality', state.modality);
    if (state.language) p.set('language', state.language);
    if (state.free) p.set('free', 'true');
    if (state.page > 1) p.set('page', String(state.page));
    const qs = p.toString();
    // replaceState does not fire hashchange: the page updates in place and keeps focus.
    history.replaceState(null, '', `#/therapists${qs ? `?${qs}` : ''}`);
  };

  let seq = 0;
  const load = async ({ focusResults = false } = {}) => {
    const mine = ++seq;
    results.setAttribute('aria-busy', 'true');
    let data;
    try {
      data = await publicApi('/therapists', {
        query: {
          specialisation: state.specialisation,
          modality: state.modality,
          language: state.language,
          free_consultation: state.free ? 'true' : undefined,
          page: state.page,
          per_page: PER_PAGE,
        },
      });
    } catch (err) {
      if (mine !== seq || !ctx.alive()) return;
      replace(results, notice('error', describeError(err)));
      results.setAttribute('aria-busy', 'false');
      return;
    }
    if (mine !== seq || !ctx.alive()) return;
    results.setAttribute('aria-busy', 'false');
    const pages = Math.max(1, Math.ceil(data.total / data.per_page));
    const summary = h('p', { class: 'muted', id: 'directory-count' }, data.total
      ? `${pluralise(data.total, 'therapist', 'therapists')} found.`
      : '');
    if (!data.items.length) {
      replace(results, summary, notice('info', 'No therapist matches all of these filters yet. Try removing one of them.'));
      announce('No therapists match these filters.');
      return;
    }
    const list = h('ul', { class: 'therapist-list' }, data.items.map((t) => card(t, vocab)));
    const pager = pages > 1 ? h('nav', { class: 'pager', 'aria-label': 'Pages' },
      h('button', { type: 'button', class: 'button small', id: 'page-prev', disabled: state.page <= 1, onclick: () => { state.page -= 1; syncUrl(); load({ focusResults: true }); } }, 'Previous'),
      h('span', { 'aria-current': 'page' }, `Page ${data.page} of ${pages}`),
      h('button', { type: 'button', class: 'button small', id: 'page-next', disabled: state.page >= pages, onclick: () => { state.page += 1; syncUrl(); load({ focusResults: true }); } }, 'Next')) : null;
    replace(results, summary, list, pager);
    announce(`${pluralise(data.total, 'therapist', 'therapists')} found${pages > 1 ? `, page ${data.page} of ${pages}` : ''}.`);
    if (focusResults) {
      summary.setAttribute('tabindex', '-1');
      summary.focus();
    }
  };

  const onFilter = () => {
    state.specialisation = spec.control.value;
    state.modality = mod.control.value;
    state.language = lang.control.value;
    state.free = free.checked;
    state.page = 1;
    syncUrl();
    load();
  };
  [spec.control, mod.control, lang.control, free].forEach((c) => c.addEventListener('change', onFilter));
  clearBtn.addEventListener('click', () => {
    spec.control.value = '';
    mod.control.value = '';
    lang.control.value = '';
    free.checked = false;
    onFilter();
  });

  await load();
}

function initials(name) {
  return name.split(/\s+/).filter((w) => w && !/^(dr|mr|mrs|ms|mx|prof)\.?$/i.test(w)).slice(0, 2).map((w) => w[0].toUpperCase()).join('') || '•';
}

export function avatar(name) {
  return h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(name));
}

function card(t, vocab) {
  const href = `#/therapists/${t.id}`;
  const bio = t.bio ? (t.bio.length > 180 ? `${t.bio.slice(0, 177).trimEnd()}…` : t.bio) : 'No introduction yet.';
  return h('li', {},
    h('article', { class: 'card therapist-card', dataset: { id: t.id }, 'aria-labelledby': `t-${t.id}` },
      h('div', { class: 'person' }, avatar(t.display_name),
        h('div', {},
          h('h2', { id: `t-${t.id}` }, h('a', { href, class: 'profile-link' }, t.display_name)),
          t.offers_free_consultation ? h('span', { class: 'badge' }, 'Free consultation') : null)),
      h('p', { class: 'bio' }, bio),
      t.specialisations.length ? h('ul', { class: 'chips', 'aria-label': 'Works with' }, t.specialisations.slice(0, 5).map((s) => h('li', { class: 'chip' }, labelFor(vocab.specialisations, s)))) : null,
      t.languages.length ? h('p', { class: 'small muted' }, `Speaks ${t.languages.map(languageName).join(', ')}`) : null,
      h('a', { href, class: 'button small', 'aria-label': `View ${t.display_name}'s profile and times` }, 'Profile and times')));
}
