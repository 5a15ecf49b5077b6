// The therapist directory: filters (kept in the address so Back works), results, pages.

import { h, replace, field, select, notice, announce } from '../lib/dom.js';
import { publicApi, describeError } from '../lib/api.js';
import { loadVocabulary, labelFor, languageOptions } from '../lib/vocab.js';
import { languageName } from '../lib/format.js';
import { t } from '../lib/i18n.js';

const PER_PAGE = 12;

export async function render(ctx) {
  const { root, query } = ctx;
  const results = h('div', { id: 'directory-results', 'aria-busy': 'true' }, h('p', { class: 'loading' }, t('directory.loading')));
  const page = h('section', { class: 'page' },
    h('h1', {}, t('directory.title')),
    h('p', { class: 'lead' }, t('directory.lead')));
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

  const spec = field(t('directory.help_with'), select(vocab.specialisations.map((v) => ({ value: v.slug, label: labelFor(vocab.specialisations, v.slug) })), { id: 'filter-specialisation', empty: t('directory.anything'), value: state.specialisation }));
  const mod = field(t('directory.way'), select(vocab.modalities.map((v) => ({ value: v.slug, label: labelFor(vocab.modalities, v.slug) })), { id: 'filter-modality', empty: t('directory.any_approach'), value: state.modality }));
  const langs = languageOptions(state.language ? [state.language] : []);
  const lang = field(t('directory.language'), select(langs, { id: 'filter-language', empty: t('directory.any_language'), value: state.language }));
  const free = h('input', { type: 'checkbox', id: 'filter-free', checked: state.free });
  const freeWrap = h('div', { class: 'check' }, free, h('label', { for: 'filter-free' }, t('directory.free')));
  const clearBtn = h('button', { type: 'button', class: 'button quiet small', id: 'filter-clear' }, t('directory.clear'));

  const filters = h('form', { class: 'filters', role: 'search', 'aria-label': t('directory.filters') }, spec.wrap, mod.wrap, lang.wrap, freeWrap, h('div', { class: 'field' }, clearBtn));
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
      ? t('directory.found', { count: data.total })
      : '');
    if (!data.items.length) {
      replace(results, summary, notice('info', t('directory.none')));
      announce(t('directory.none_said'));
      return;
    }
    const list = h('ul', { class: 'therapist-list' }, data.items.map((t) => card(t, vocab)));
    const pager = pages > 1 ? h('nav', { class: 'pager', 'aria-label': t('directory.pages') },
      h('button', { type: 'button', class: 'button small', id: 'page-prev', disabled: state.page <= 1, onclick: () => { state.page -= 1; syncUrl(); load({ focusResults: true }); } }, t('directory.previous')),
      h('span', { 'aria-current': 'page' }, t('directory.page', { page: data.page, pages })),
      h('button', { type: 'button', class: 'button small', id: 'page-next', disabled: state.page >= pages, onclick: () => { state.page += 1; syncUrl(); load({ focusResults: true }); } }, t('directory.next'))) : null;
    replace(results, summary, list, pager);
    announce(pages > 1 ? t('directory.found_page', { count: data.total, page: data.page, pages }) : t('directory.found', { count: data.total }));
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
  return h('span', { class: 'avatar', 'aria-hidden': 'true', translate: 'no' }, initials(name));
}

function card(th, vocab) {
  const href = `#/therapists/${th.id}`;
  const bio = th.bio ? (th.bio.length > 180 ? `${th.bio.slice(0, 177).trimEnd()}…` : th.bio) : null;
  return h('li', {},
    h('article', { class: 'card therapist-card', dataset: { id: th.id }, 'aria-labelledby': `t-${th.id}` },
      h('div', { class: 'person' }, avatar(th.display_name),
        h('div', {},
          h('h2', { id: `t-${th.id}`, translate: 'no' }, h('a', { href, class: 'profile-link' }, th.display_name)),
          th.offers_free_consultation ? h('span', { class: 'badge' }, t('directory.free_badge')) : null)),
      // What therapists write of themselves is theirs, in their words.
      bio ? h('p', { class: 'bio', translate: 'no' }, bio) : h('p', { class: 'bio' }, t('directory.no_intro')),
      th.specialisations.length ? h('ul', { class: 'chips', 'aria-label': t('directory.works_with') }, th.specialisations.slice(0, 5).map((s) => h('li', { class: 'chip' }, labelFor(vocab.specialisations, s)))) : null,
      th.languages.length ? h('p', { class: 'small muted' }, t('directory.speaks', { languages: th.languages.map(languageName).join(', ') })) : null,
      h('a', { href, class: 'button small', 'aria-label': t('directory.profile_label', { name: th.display_name }) }, t('directory.profile'))));
}
