// The Schedules and Webhooks views: what the assistant does on its own for the person signed in.
// Built on the client library only, like every view; text from the server goes in as text nodes.

import { externalLink, field, fill, h, time } from './dom.js';

/**
 * `ctx`: {cortex, mount, heading, busy, notify, conversations: () => [...], topicOf: (id) => string}
 */
export function showSchedules(ctx) {
  const { cortex, busy, notify } = ctx;
  const list = h('ol', { class: 'schedules', 'aria-label': 'Schedules' });
  const empty = h('p', { class: 'muted' }, 'No schedules yet.');
  const conversation = h('select', { name: 'conversation_id', required: true },
    ctx.conversations().map((c) => h('option', { value: c.id }, c.topic)));
  const content = h('textarea', { name: 'content', rows: '2', required: true });
  const cron = h('input', { name: 'cron', required: true, value: '0 8 * * 1-5', maxlength: '120' });
  const zone = h('input', { name: 'timezone', required: true, value: Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC', maxlength: '64' });
  const form = h('form', null,
    field('Conversation', conversation),
    field('What to say', content),
    field('When (cron)', cron, 'minute hour day-of-month month day-of-week, e.g. 0 8 * * 1-5: weekdays at 8:00'),
    field('Timezone', zone, 'An IANA name, e.g. Europe/Berlin'),
    h('button', { type: 'submit' }, 'Create schedule'));
  ctx.mount('schedules', ctx.heading('Schedules'),
    h('p', { class: 'muted' }, 'The assistant posts for you at set times; its turn runs as for anything you send.'),
    h('details', { class: 'create' }, h('summary', null, 'New schedule'), form), empty, list);

  function row(schedule) {
    const li = h('li', { class: 'schedule', dataset: { id: schedule.id } },
      h('p', null, h('strong', null, schedule.cron), ` (${schedule.timezone}) · `, ctx.topicOf(schedule.conversation_id),
        schedule.active ? null : h('span', { class: 'muted' }, ' · paused')),
      h('p', { class: 'text' }, schedule.content),
      h('p', { class: 'muted' },
        schedule.next_run_at ? ['Next: ', time(schedule.next_run_at), ' ', new Date(schedule.next_run_at).toLocaleDateString()] : 'Not scheduled',
        schedule.last_run_at ? [' · last: ', time(schedule.last_run_at)] : null,
        schedule.paused_reason ? ` · ${schedule.paused_reason}` : null),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', onclick: (e) => busy(e.target, async () => { await cortex.runSchedule(schedule.id); notify('Posted now.'); }) }, 'Run now'),
        h('button', { type: 'button', onclick: (e) => busy(e.target, async () => { li.replaceWith(row(await cortex.updateSchedule(schedule.id, { active: !schedule.active }))); }) }, schedule.active ? 'Pause' : 'Resume'),
        h('button', { type: 'button', onclick: (e) => busy(e.target, async () => { await cortex.deleteSchedule(schedule.id); li.remove(); }) }, 'Delete')));
    return li;
  }

  async function load() {
    const schedules = (await busy(null, () => cortex.schedules())) || [];
    empty.hidden = schedules.length > 0;
    fill(list, schedules.map(row));
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form.querySelector('button'), async () => {
      await cortex.createSchedule({ conversation_id: conversation.value, content: content.value, cron: cron.value.trim(), timezone: zone.value.trim() });
      content.value = '';
      notify('Schedule created.');
      await load();
    });
  });
  load();
}

export function showWebhooks(ctx) {
  const { cortex, busy, notify } = ctx;
  const list = h('ol', { class: 'webhooks', 'aria-label': 'Webhooks' });
  const empty = h('p', { class: 'muted' }, 'No webhooks yet.');
  const secretBox = h('p', { class: 'secret', hidden: true, role: 'status' });
  const url = h('input', { name: 'url', type: 'url', required: true, placeholder: 'https://…', maxlength: '2000' });
  const events = h('input', { name: 'events', required: true, value: 'assistant.completed, approval.requested' });
  const description = h('input', { name: 'description', maxlength: '500' });
  const form = h('form', null, field('URL', url), field('Events', events, 'Event types, comma-separated, or *'),
    field('Description', description), h('button', { type: 'submit' }, 'Add webhook'));
  ctx.mount('webhooks', ctx.heading('Webhooks'),
    h('p', { class: 'muted' }, 'Your events, POSTed to a server of yours and signed (Standard Webhooks).'),
    h('details', { class: 'create' }, h('summary', null, 'New webhook'), form), secretBox, empty, list);

  function showSecret(secret) {
    secretBox.hidden = false;
    fill(secretBox, 'Signing secret (shown only now): ', h('code', null, secret));
  }

  function deliveryRow(webhook, item) {
    const li = h('li', { class: `delivery ${item.status}` },
      `#${item.event_id} ${item.type} · ${item.status} · ${item.attempts} attempt(s)`,
      item.last_status_code ? ` · HTTP ${item.last_status_code}` : null,
      item.last_error ? h('span', { class: 'muted' }, ` · ${item.last_error}`) : null,
      ' ', h('button', { type: 'button', class: 'link', onclick: (e) => busy(e.target, async () => { li.replaceWith(deliveryRow(webhook, await cortex.retryDelivery(webhook.id, item.id))); }) }, 'Retry'));
    return li;
  }

  function row(webhook) {
    const recent = h('ol', { class: 'deliveries', 'aria-label': 'Recent deliveries' });
    const li = h('li', { class: 'webhook', dataset: { id: webhook.id } },
      h('p', null, externalLink(webhook.url), webhook.active ? null : h('span', { class: 'muted' }, ` · inactive${webhook.disabled_reason ? ': ' + webhook.disabled_reason : ''}`)),
      h('p', { class: 'muted' }, webhook.events.join(', '), webhook.description ? ` · ${webhook.description}` : null),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', onclick: (e) => busy(e.target, async () => { fill(recent, (await cortex.deliveries(webhook.id, { limit: 20 })).items.map((item) => deliveryRow(webhook, item))); }) }, 'Recent deliveries'),
        h('button', { type: 'button', onclick: (e) => busy(e.target, async () => { li.replaceWith(row(await cortex.updateWebhook(webhook.id, { active: !webhook.active }))); }) }, webhook.active ? 'Deactivate' : 'Activate'),
        h('button', { type: 'button', onclick: (e) => busy(e.target, async () => { showSecret((await cortex.rotateWebhookSecret(webhook.id)).secret); }) }, 'New secret'),
        h('button', { type: 'button', onclick: (e) => busy(e.target, async () => { await cortex.deleteWebhook(webhook.id); li.remove(); }) }, 'Delete')),
      recent);
    return li;
  }

  async function load() {
    const webhooks = (await busy(null, () => cortex.webhooks())) || [];
    empty.hidden = webhooks.length > 0;
    fill(list, webhooks.map(row));
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form.querySelector('button'), async () => {
      const names = events.value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
      const created = await cortex.createWebhook({ url: url.value.trim(), events: names, description: description.value.trim() });
      showSecret(created.secret);
      notify('Webhook added.');
      await load();
    });
  });
  load();
}
