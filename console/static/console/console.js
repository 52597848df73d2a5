// The console at /console/: a page for people, built only on the client library (../cortex/client.js)
// and so only on the public contract. Every piece of text from users, models and experts goes into
// the DOM as a text node (dom.js).

import { CortexClient, CortexError, STATES } from '../cortex/client.js';
import { showSchedules, showWebhooks } from './automation.js';
import { append, externalLink, field, fill, h, select, time } from './dom.js';

const cortex = new CortexClient();
window.cortex = cortex; // for the curious, and for the browser tests: the page's own client

const ui = {
  connection: document.getElementById('connection'),
  nav: document.getElementById('nav'),
  account: document.getElementById('account'),
  sidebar: document.getElementById('sidebar'),
  main: document.getElementById('main'),
  toast: document.getElementById('toast'),
};

const STATE_LABELS = {
  [STATES.SIGNED_OUT]: 'Signed out',
  [STATES.CONNECTING]: 'Connecting…',
  [STATES.LIVE]: 'Live',
  [STATES.RECONNECTING]: 'Reconnecting…',
};
const RESPONDERS = [['none', 'Nobody (no assistant)'], ['echo', 'Echo (for testing)'], ['llm', 'Assistant (model)']];
const SCOPES = [['conversation', 'This conversation only'], ['personal', 'Also my own memory']];
const POLICIES = [['queue', 'Queue: one after another'], ['reject', 'Reject while answering'], ['interrupt', 'Interrupt the running answer']];
const TOOL_POLICIES = [['auto', 'Run'], ['ask', 'Ask me'], ['deny', 'Never']];
const ACTIVITY_LIMIT = 500;

const data = {
  workspaces: [],
  conversations: [],
  activity: [],
  missed: 0,
  inbox: null, // null: the server has no inbox
  memoryAvailable: false,
  automation: false, // the server has /schedules and /webhooks
  sidebarOpen: false,
};
let view = { name: 'none' }; // the mounted view, with its own update hooks

// ----- small helpers ----------------------------------------------------------------------------------

function notify(message) {
  ui.toast.hidden = false;
  fill(ui.toast, message);
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => {
    ui.toast.hidden = true;
  }, 6000);
}

function failed(error) {
  if (error instanceof CortexError) {
    const fields = error.fields ? ' ' + Object.entries(error.fields).map(([name, problems]) => `${name}: ${[].concat(problems).join(' ')}`).join('; ') : '';
    notify(`${error.message}${fields}`);
  } else {
    console.error(error);
    notify(String(error && error.message ? error.message : error));
  }
}

/** Run an async action from a button, disabling it meanwhile; errors become a toast. */
async function busy(button, action) {
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    failed(error);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function me() {
  return cortex.user ? cortex.user.oid : null;
}

function who(userId) {
  if (userId && userId === me()) return `${cortex.user.name || cortex.user.email || 'You'} (you)`;
  return userId ? `Participant ${String(userId).slice(0, 8)}` : 'Someone';
}

function conversationById(id) {
  return data.conversations.find((c) => c.id === id) || null;
}

function topicOf(id) {
  if (!id) return 'No conversation';
  const conversation = conversationById(id);
  return conversation ? conversation.topic : `Conversation ${String(id).slice(0, 8)}`;
}

function ownsWorkspace(workspaceId) {
  return data.workspaces.some((w) => w.id === workspaceId);
}

function heading(text) {
  return h('h2', { tabindex: '-1', class: 'view-title' }, text);
}

function mount(name, ...children) {
  view = { name };
  fill(ui.main, ...children);
  const title = ui.main.querySelector('.view-title');
  if (title && document.activeElement !== document.body && !ui.main.contains(document.activeElement)) title.focus();
  return view;
}

// ----- connection state and account -------------------------------------------------------------------

cortex.on('state', (state) => {
  ui.connection.dataset.state = state;
  fill(ui.connection, STATE_LABELS[state] || state);
});

let startedFor = null; // the user whose console is on screen

cortex.on('session', (user) => {
  if (!user) {
    startedFor = null;
    showSignIn();
  } else if (startedFor && startedFor !== user.oid) {
    location.reload(); // another tab signed in as someone else: start clean
  } else if (!startedFor) {
    start(); // signed in here, in another tab, or by a provider
  }
});

function renderAccount() {
  if (!cortex.user) return fill(ui.account);
  const user = cortex.user;
  const copy = h('button', { type: 'button', class: 'link', onclick: () => navigator.clipboard?.writeText(user.oid).then(() => notify('Your user id is copied.'), () => notify(user.oid)) }, 'Copy my user id');
  const download = h('button', { type: 'button', class: 'link', onclick: (e) => busy(e.currentTarget, downloadAccount) }, 'Download my data');
  const signOut = h('button', { type: 'button', onclick: () => cortex.logout() }, 'Sign out');
  fill(ui.account, h('details', { class: 'menu' }, h('summary', null, user.name || user.email || 'Account'),
    h('div', { class: 'menu-body' }, h('p', null, user.email || ''), h('p', { class: 'muted mono' }, user.oid), copy, download, signOut)));
}

async function downloadAccount() {
  const blob = await cortex.exportAccount();
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: 'cortex-account.json' });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ----- sign in ----------------------------------------------------------------------------------------

async function showSignIn() {
  view = { name: 'signin' };
  ui.nav.hidden = true;
  ui.sidebar.hidden = true;
  fill(ui.account);
  const error = h('p', { class: 'error', role: 'alert' });
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const providers = h('div', { class: 'providers' });
  const form = h('form', { class: 'card signin', 'aria-labelledby': 'signin-title' },
    h('h2', { id: 'signin-title', class: 'view-title', tabindex: '-1' }, 'Sign in to Cortex'),
    field('Email', email), field('Password', password), error, submit, providers);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    fill(error);
    submit.disabled = true;
    try {
      await cortex.login(email.value.trim(), password.value); // 'session' starts the console
      password.value = '';
    } catch (err) {
      fill(error, err instanceof CortexError && err.status === 401 ? 'Wrong email or password.' : (err.message || String(err)));
    } finally {
      submit.disabled = false;
    }
  });
  fill(ui.main, form);
  email.focus();
  try {
    const list = await cortex.providers();
    if (list.length) {
      fill(providers, h('p', { class: 'muted' }, 'Or sign in with'),
        list.map((provider) => h('a', { class: 'button', href: cortex.providerLoginUrl(provider, location.pathname) }, provider.name)));
    }
  } catch {
    // No providers listed: password sign-in only.
  }
}

// ----- start, navigation, sidebar ---------------------------------------------------------------------

async function start() {
  if (startedFor === cortex.user.oid) return;
  startedFor = cortex.user.oid;
  renderAccount();
  ui.nav.hidden = false;
  ui.sidebar.hidden = false;
  cortex.connect();
  await Promise.all([loadDirectory(), probeFeatures()]);
  renderNav();
  route();
}

async function loadDirectory() {
  try {
    const [workspaces, conversations] = await Promise.all([cortex.workspaces(), cortex.conversations()]);
    data.workspaces = workspaces;
    const byId = new Map(conversations.map((c) => [c.id, c]));
    // The owner also sees conversations of their workspaces they do not take part in.
    const owned = await Promise.all(workspaces.map((w) => cortex.conversations(w.id)));
    for (const conversation of owned.flat()) byId.set(conversation.id, conversation);
    data.conversations = [...byId.values()];
  } catch (error) {
    failed(error);
  }
  renderSidebar();
}

async function probeFeatures() {
  try {
    data.inbox = await cortex.inbox();
  } catch (error) {
    data.inbox = null;
    if (error.status !== 404) failed(error);
  }
  try {
    data.memoryAvailable = (await cortex.memory({ limit: 1 })) !== null;
  } catch {
    data.memoryAvailable = false;
  }
  try {
    data.automation = (await cortex.schedules()) !== null;
  } catch {
    data.automation = false;
  }
}

function automationContext() {
  return { cortex, mount, heading, busy, notify, conversations: () => data.conversations, topicOf };
}

function renderNav() {
  const current = location.hash || '#/';
  const link = (href, label, extra) => h('a', { href, 'aria-current': current === href || (href !== '#/' && current.startsWith(href)) ? 'page' : null }, label, extra);
  const count = data.inbox ? data.inbox.length : 0;
  fill(ui.nav,
    h('button', { type: 'button', class: 'sidebar-toggle', 'aria-controls': 'sidebar', 'aria-expanded': String(data.sidebarOpen), onclick: toggleSidebar }, 'Conversations'),
    link('#/', 'Home'),
    link('#/activity', 'Activity', data.missed ? h('span', { class: 'count', 'aria-label': `${data.missed} missed` }, String(data.missed)) : null),
    data.inbox ? link('#/inbox', 'Inbox', h('span', { id: 'inbox-count', class: count ? 'count' : 'count zero', 'aria-label': `${count} open` }, String(count))) : null,
    data.memoryAvailable ? link('#/memory', 'My memory') : null,
    data.automation ? link('#/schedules', 'Schedules') : null,
    data.automation ? link('#/webhooks', 'Webhooks') : null,
    data.workspaces.length ? link('#/experts', 'Experts') : null,
    link('#/connections', 'Connected accounts'),
    link('#/usage', 'Usage'));
}

function toggleSidebar() {
  data.sidebarOpen = !data.sidebarOpen;
  ui.sidebar.classList.toggle('open', data.sidebarOpen);
  renderNav();
}

function renderSidebar() {
  const current = (location.hash.match(/^#\/c\/(.+)$/) || [])[1];
  const entry = (conversation) => h('li', null, h('a', { href: `#/c/${conversation.id}`, 'aria-current': conversation.id === current ? 'page' : null }, conversation.topic));
  const groups = data.workspaces.map((workspace) => {
    const inside = data.conversations.filter((c) => c.workspace_id === workspace.id);
    return h('section', { class: 'workspace' },
      h('h3', null, workspace.name),
      inside.length ? h('ul', null, inside.map(entry)) : h('p', { class: 'muted' }, 'No conversations yet.'),
      newConversationForm(workspace));
  });
  const shared = data.conversations.filter((c) => !ownsWorkspace(c.workspace_id));
  fill(ui.sidebar,
    h('h2', { class: 'visually-hidden' }, 'Workspaces and conversations'),
    groups,
    shared.length ? h('section', { class: 'workspace' }, h('h3', null, 'Shared with me'), h('ul', null, shared.map(entry))) : null,
    newWorkspaceForm());
  ui.sidebar.classList.toggle('open', data.sidebarOpen);
}

function newWorkspaceForm() {
  const name = h('input', { name: 'name', required: true, maxlength: '200' });
  const description = h('input', { name: 'description', maxlength: '2000' });
  const form = h('form', null, field('Name', name), field('Description', description), h('button', { type: 'submit' }, 'Create workspace'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form.querySelector('button'), async () => {
      const workspace = await cortex.createWorkspace({ name: name.value.trim(), description: description.value.trim() });
      data.workspaces.push(workspace);
      renderSidebar();
      renderNav();
      notify(`Workspace “${workspace.name}” created.`);
    });
  });
  return h('details', { class: 'create' }, h('summary', null, 'New workspace'), form);
}

function participantIds(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

function newConversationForm(workspace) {
  const topic = h('input', { name: 'topic', required: true, maxlength: '200' });
  const responder = select('responder', RESPONDERS, 'echo');
  const participants = h('input', { name: 'participants', placeholder: 'user ids, comma-separated' });
  const form = h('form', null, field('Topic', topic), field('Who answers', responder),
    field('Other participants', participants, 'Their user ids (each person finds theirs in the account menu).'),
    h('button', { type: 'submit' }, 'Create conversation'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form.querySelector('button'), async () => {
      const conversation = await cortex.createConversation({
        workspace_id: workspace.id,
        topic: topic.value.trim(),
        responder: responder.value,
        participant_ids: participantIds(participants.value),
      });
      data.conversations.push(conversation);
      location.hash = `#/c/${conversation.id}`;
      renderSidebar();
    });
  });
  return h('details', { class: 'create' }, h('summary', null, 'New conversation'), form);
}

function route() {
  if (!cortex.user) return;
  const hash = location.hash || '#/';
  renderNav();
  renderSidebar();
  let match;
  if ((match = hash.match(/^#\/c\/([0-9a-f-]+)$/i))) showConversation(match[1]);
  else if (hash === '#/activity') showActivity();
  else if (hash === '#/inbox' && data.inbox) showInbox();
  else if (hash === '#/memory' && data.memoryAvailable) showMemory();
  else if (hash === '#/experts') showExperts();
  else if (hash.startsWith('#/connections')) showConnections();
  else if (hash.startsWith('#/usage')) showUsage();
  else if (hash === '#/schedules' && data.automation) showSchedules(automationContext());
  else if (hash === '#/webhooks' && data.automation) showWebhooks(automationContext());
  else showHome();
  if (window.matchMedia('(max-width: 760px)').matches && data.sidebarOpen && hash.startsWith('#/c/')) toggleSidebar();
}

window.addEventListener('hashchange', route);

function showHome() {
  const recent = [...data.conversations].slice(0, 20);
  mount('home', heading(`Hello${cortex.user.name ? ', ' + cortex.user.name : ''}`),
    h('p', null, 'Pick a conversation, or create a workspace and a conversation in the side panel.'),
    recent.length ? h('ul', { class: 'cards' }, recent.map((c) => h('li', null, h('a', { href: `#/c/${c.id}` }, c.topic), h('span', { class: 'muted' }, ` · ${c.responder || 'none'}`)))) : null);
}

// ----- events -----------------------------------------------------------------------------------------

const INBOX_EVENTS = new Set(['approval.requested', 'approval.resolved', 'question.asked', 'question.answered']);

cortex.on('event', (event, meta) => {
  data.activity.unshift({ event, missed: meta.missed });
  if (data.activity.length > ACTIVITY_LIMIT) data.activity.pop();
  if (meta.missed) {
    data.missed += 1;
    renderNav();
  }
  if (view.onEvent) view.onEvent(event, meta);
  if (INBOX_EVENTS.has(event.type) && data.inbox) refreshInboxSoon();
});

cortex.on('turn', (turn, event) => {
  if (view.onTurn) view.onTurn(turn, event);
});

cortex.on('reset', () => {
  notify('Some events are too old to replay; reloading history.');
  if (view.reload) view.reload();
});

function refreshInboxSoon() {
  clearTimeout(refreshInboxSoon.timer);
  refreshInboxSoon.timer = setTimeout(async () => {
    try {
      data.inbox = (await cortex.inbox()) || [];
    } catch (error) {
      failed(error);
      return;
    }
    renderNav();
    if (view.name === 'inbox') view.reload();
  }, 150);
}

// ----- a conversation ---------------------------------------------------------------------------------

function messageItem({ id, author, senderId, content, timestamp }) {
  const mine = author !== 'assistant' && senderId === me();
  return h('li', { class: `message ${author === 'assistant' ? 'assistant' : 'user'}${mine ? ' mine' : ''}`, dataset: { id: id || '' } },
    h('p', { class: 'who' }, author === 'assistant' ? 'Assistant' : who(senderId), ' ', timestamp ? time(timestamp) : null),
    h('p', { class: 'text' }, content));
}

async function showConversation(conversationId) {
  let conversation = conversationById(conversationId);
  const list = h('ol', { class: 'messages', 'aria-label': 'Messages', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  const earlier = h('button', { type: 'button', class: 'link', hidden: true }, 'Load earlier messages');
  const title = heading(conversation ? conversation.topic : 'Conversation');
  const subtitle = h('p', { class: 'muted' });
  const settings = h('div');
  const textarea = h('textarea', { name: 'content', rows: '2', required: true, maxlength: '32768' });
  const send = h('button', { type: 'submit' }, 'Send');
  const composer = h('form', { class: 'composer' }, field('Write a message', textarea, 'Enter sends; Shift+Enter starts a new line.'), send);
  const shown = new Set(); // message ids on screen
  const bubbles = new Map(); // turn id -> {item, text, status, cancel}
  let nextBefore = null;

  const current = mount('conversation', h('section', { class: 'conversation', 'aria-labelledby': 'conversation-title' },
    h('header', { class: 'conversation-head' }, title, subtitle), settings, earlier, list, composer));
  title.id = 'conversation-title';

  function describe() {
    if (!conversation) return;
    fill(title, conversation.topic);
    fill(subtitle, `${conversation.participant_ids.length} participant${conversation.participant_ids.length === 1 ? '' : 's'} · answers: ${conversation.responder || 'none'}`,
      conversation.turn_policy ? ` · double texting: ${conversation.turn_policy}` : '',
      conversation.context_scope ? ` · context: ${conversation.context_scope}` : '');
    fill(settings, conversationSettings(conversation, (updated) => {
      conversation = updated;
      const index = data.conversations.findIndex((c) => c.id === updated.id);
      if (index >= 0) data.conversations[index] = updated;
      describe();
      renderSidebar();
    }));
  }

  function scrollDown() {
    list.lastElementChild?.scrollIntoView({ block: 'end' });
  }

  function addMessage(message, { atTop = false } = {}) {
    if (message.id && shown.has(message.id)) return;
    if (message.id) shown.add(message.id);
    const item = messageItem(message);
    if (atTop) list.prepend(item);
    else {
      list.append(item);
      scrollDown();
    }
  }

  function bubbleFor(turn) {
    let bubble = bubbles.get(turn.id);
    if (bubble) return bubble;
    const text = h('p', { class: 'text' });
    const status = h('p', { class: 'status', role: 'status' });
    const tools = h('ul', { class: 'tools' });
    const cancel = h('button', { type: 'button', class: 'cancel', onclick: (e) => busy(e.currentTarget, async () => {
      try {
        await cortex.cancelTurn(turn.id);
      } catch (error) {
        if (error.code !== 'conflict') throw error; // finished meanwhile
      }
    }) }, 'Stop');
    const item = h('li', { class: 'message assistant streaming', dataset: { turn: turn.id }, 'aria-busy': 'true' },
      h('p', { class: 'who' }, 'Assistant', h('span', { class: 'muted' }, ` answering ${who(turn.requesterId)}`)), tools, text, status, cancel);
    bubble = { item, text, status, tools, cancel };
    bubbles.set(turn.id, bubble);
    list.append(item);
    scrollDown();
    return bubble;
  }

  current.onTurn = (turn) => {
    if (turn.conversationId !== conversationId) return;
    if (turn.messageId && shown.has(turn.messageId) && !bubbles.has(turn.id)) return; // already in history
    const bubble = bubbleFor(turn);
    fill(bubble.text, turn.text);
    fill(bubble.tools, turn.tools.map(toolCallItem));
    const finished = turn.status === 'completed' || turn.status === 'failed' || turn.status === 'cancelled';
    const label = { running: 'Answering…', waiting: 'Waiting for an answer in the inbox…', completed: '', failed: `Failed: ${turn.error ? turn.error.message || turn.error.code : 'unknown error'}`, cancelled: turn.reason === 'interrupted' ? 'Interrupted by a newer message.' : 'Stopped.' }[turn.status];
    fill(bubble.status, label || '');
    bubble.item.dataset.status = turn.status;
    if (finished) {
      bubble.item.classList.remove('streaming');
      bubble.item.removeAttribute('aria-busy');
      bubble.cancel.remove();
      if (turn.messageId) {
        shown.add(turn.messageId);
        bubble.item.dataset.id = turn.messageId;
      }
    }
    scrollDown();
  };

  current.onEvent = (event) => {
    if (event.type === 'input' && event.conversation_id === conversationId) {
      addMessage({ id: event.data.id, author: 'user', senderId: event.user_id, content: event.data.content, timestamp: event.data.timestamp });
    }
  };

  async function loadPage() {
    const page = await cortex.messages(conversationId, { before: nextBefore || undefined, limit: 50 });
    const firstLoad = nextBefore === null;
    for (const message of page.messages) addMessage({ id: message.id, author: message.author, senderId: message.sender_id, content: message.content, timestamp: message.timestamp }, { atTop: true });
    nextBefore = page.next_before || null;
    earlier.hidden = !nextBefore;
    if (firstLoad) scrollDown();
  }

  current.reload = () => {
    shown.clear();
    bubbles.clear();
    list.replaceChildren();
    nextBefore = null;
    loadPage().catch(failed);
  };

  earlier.addEventListener('click', () => busy(earlier, loadPage));

  textarea.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  composer.addEventListener('submit', (event) => {
    event.preventDefault();
    const content = textarea.value;
    if (!content.trim()) return;
    busy(send, async () => {
      const answer = await cortex.send({ content, conversationId });
      textarea.value = '';
      addMessage({ id: answer.data.id, author: 'user', senderId: me(), content: answer.data.content, timestamp: answer.data.timestamp });
      textarea.focus();
    });
  });

  try {
    if (!conversation) {
      conversation = await cortex.getConversation(conversationId).catch(() => null);
      if (conversation && view === current) data.conversations.push(conversation);
    }
    describe();
    await loadPage();
    // Turns already running when the page opened (their events came before this view).
    for (const turn of cortex.turns.values()) if (turn.conversationId === conversationId) current.onTurn(turn);
  } catch (error) {
    failed(error);
  }
}

function conversationSettings(conversation, onSaved) {
  const owner = ownsWorkspace(conversation.workspace_id);
  const participantList = h('ul', { class: 'participants' }, conversation.participant_ids.map((id) => h('li', null, h('span', { class: 'mono' }, who(id)),
    owner && id !== me() ? h('button', { type: 'button', class: 'link', 'aria-label': `Remove ${who(id)}`, onclick: (e) => busy(e.currentTarget, async () => {
      onSaved(await cortex.updateConversation(conversation.id, { participant_ids: conversation.participant_ids.filter((p) => p !== id) }));
    }) }, 'Remove') : null)));
  if (!owner) return h('details', { class: 'settings' }, h('summary', null, 'Participants'), participantList);
  const topic = h('input', { name: 'topic', value: conversation.topic, maxlength: '200', required: true });
  const responder = select('responder', RESPONDERS, conversation.responder || 'none');
  const scope = 'context_scope' in conversation ? select('context_scope', SCOPES, conversation.context_scope) : null;
  const policy = 'turn_policy' in conversation ? select('turn_policy', POLICIES, conversation.turn_policy) : null;
  const add = h('input', { name: 'participant', placeholder: 'user id' });
  const form = h('form', { class: 'settings-form' }, field('Topic', topic), field('Who answers', responder),
    scope ? field('Context', scope, 'Personal adds your own memory from everywhere; only while you are the only participant.') : null,
    policy ? field('When a message arrives during an answer', policy) : null,
    h('button', { type: 'submit' }, 'Save settings'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const changes = { topic: topic.value.trim(), responder: responder.value };
    if (scope) changes.context_scope = scope.value;
    if (policy) changes.turn_policy = policy.value;
    busy(form.querySelector('button'), async () => {
      onSaved(await cortex.updateConversation(conversation.id, changes));
      notify('Settings saved.');
    });
  });
  const addForm = h('form', { class: 'inline' }, field('Add a participant', add), h('button', { type: 'submit' }, 'Add'));
  addForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const ids = participantIds(add.value);
    if (!ids.length) return;
    busy(addForm.querySelector('button'), async () => {
      onSaved(await cortex.updateConversation(conversation.id, { participant_ids: [...new Set([...conversation.participant_ids, ...ids])] }));
    });
  });
  const remove = h('button', { type: 'button', class: 'danger', onclick: (e) => {
    if (!window.confirm(`Delete “${conversation.topic}” with its messages?`)) return;
    busy(e.currentTarget, async () => {
      await cortex.deleteConversation(conversation.id);
      data.conversations = data.conversations.filter((c) => c.id !== conversation.id);
      location.hash = '#/';
    });
  } }, 'Delete conversation');
  return h('details', { class: 'settings' }, h('summary', null, 'Settings and participants'), form,
    h('h3', null, 'Participants'), participantList, addForm, remove);
}

// ----- expert calls: progress, tasks and content -------------------------------------------------------

const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
const blobUrls = new Map(); // base64 data -> blob: URL (a call's image is decoded once, however often it is drawn)

/** An image block as a blob: URL of its decoded bytes (the CSP allows blob: images, nothing remote). */
function imageOf(block) {
  if (!IMAGE_TYPES.has(block.mime_type) || typeof block.data !== 'string') return null;
  let url = blobUrls.get(block.data);
  if (!url) {
    try {
      const bytes = Uint8Array.from(atob(block.data), (c) => c.charCodeAt(0));
      url = URL.createObjectURL(new Blob([bytes], { type: block.mime_type }));
    } catch {
      return null;
    }
    if (blobUrls.size > 200) {
      const [oldest, old] = blobUrls.entries().next().value;
      URL.revokeObjectURL(old);
      blobUrls.delete(oldest);
    }
    blobUrls.set(block.data, url);
  }
  return h('img', { src: url, alt: `Image from the expert (${block.mime_type})`, class: 'tool-image' });
}

/** A link from an expert's result: https only, opened by the person's click, with no referrer. */
function httpsLink(uri, label) {
  let parsed = null;
  try {
    parsed = new URL(uri);
  } catch {
    parsed = null;
  }
  if (!parsed || parsed.protocol !== 'https:') return h('code', null, String(uri));
  return h('a', { href: parsed.href, target: '_blank', rel: 'noopener noreferrer' }, label || parsed.href);
}

function blockItem(block) {
  switch (block.type) {
    case 'image':
      return block.omitted ? h('li', { class: 'muted' }, `An image (${block.mime_type}${block.size ? `, ${block.size} bytes` : ''}) too large to show`) : h('li', null, imageOf(block) || h('span', { class: 'muted' }, `An image (${block.mime_type})`));
    case 'audio':
      return h('li', { class: 'muted' }, `Audio (${block.mime_type}${block.size ? `, ${block.size} bytes` : ''})`);
    case 'resource_link':
      return h('li', null, httpsLink(block.uri, block.name || block.uri), block.description ? h('span', { class: 'muted' }, ` — ${block.description}`) : null);
    case 'resource':
      return h('li', null, h('code', null, block.uri), block.text ? h('pre', { class: 'resource' }, block.text) : null);
    default:
      return null;
  }
}

function toolCallItem(call) {
  const done = call.error ? ` — failed: ${call.error.message || call.error.code}` : call.result !== undefined ? ' — done' : ' — running';
  const task = call.task && call.result === undefined && !call.error ? h('span', { class: 'muted' }, ` (task: ${call.task.status.replace('_', ' ')})`) : null;
  let bar = null;
  if (call.progress && call.result === undefined && !call.error) {
    const { progress, total, message } = call.progress;
    bar = h('div', { class: 'tool-progress' },
      h('progress', total ? { max: String(total), value: String(Math.min(progress, total)) } : {}),
      message ? h('span', { class: 'muted' }, ` ${message}`) : null);
  }
  const blocks = call.result && Array.isArray(call.result.blocks) && call.result.blocks.length
    ? h('ul', { class: 'blocks' }, call.result.blocks.map(blockItem)) : null;
  return h('li', null, `${call.expert} · ${call.tool}`, done, task, bar, blocks);
}

// ----- activity ---------------------------------------------------------------------------------------

function summary(event) {
  const d = event.data || {};
  switch (event.type) {
    case 'input': return d.content;
    case 'assistant.delta': return d.text;
    case 'assistant.completed': return d.content;
    case 'assistant.failed': return d.error ? d.error.message || d.error.code : '';
    case 'assistant.cancelled': return d.reason || '';
    case 'tool.call': return `${d.expert} · ${d.tool}`;
    case 'tool.result': return d.error ? `failed: ${d.error.message || d.error.code}` : 'done';
    case 'tool.progress': return d.total ? `${d.progress} of ${d.total}${d.message ? ` · ${d.message}` : ''}` : String(d.progress);
    case 'tool.task': return `task ${d.status}`;
    case 'approval.requested': return `${d.expert} · ${d.tool} asks for approval`;
    case 'approval.resolved': return d.decision;
    case 'question.asked': return d.message;
    case 'question.answered': return d.action;
    default: return '';
  }
}

function activityRow({ event, missed }) {
  return h('li', { class: `event${missed ? ' missed' : ''}`, dataset: { id: String(event.id ?? ''), type: event.type } },
    h('span', { class: 'event-meta' }, time(event.timestamp), ' ', h('strong', null, event.type), ' · ', topicOf(event.conversation_id),
      event.type === 'input' ? ` · ${who(event.user_id)}` : '', missed ? h('span', { class: 'badge' }, 'while you were away') : null),
    h('span', { class: 'event-text' }, summary(event)));
}

function showActivity() {
  const list = h('ol', { class: 'activity', 'aria-label': 'Events, newest first' }, data.activity.map(activityRow));
  const note = h('textarea', { name: 'content', rows: '2', required: true });
  const form = h('form', { class: 'composer' }, field('A note to yourself (no conversation)', note), h('button', { type: 'submit' }, 'Send'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!note.value.trim()) return;
    busy(form.querySelector('button'), async () => {
      await cortex.send({ content: note.value, conversationId: null });
      note.value = '';
    });
  });
  const missed = h('p', { class: 'muted', role: 'status' }, data.missed ? `${data.missed} event${data.missed === 1 ? '' : 's'} arrived while you were away.` : '');
  const current = mount('activity', heading('Activity'), h('p', { class: 'muted' }, 'Every event you receive, live.'), missed, form, list);
  data.missed = 0;
  renderNav();
  current.onEvent = (event, meta) => {
    list.prepend(activityRow({ event, missed: meta.missed }));
    if (list.children.length > ACTIVITY_LIMIT) list.lastElementChild.remove();
  };
}

// ----- inbox ------------------------------------------------------------------------------------------

function questionForm(item, onAnswer) {
  const properties = (item.schema && item.schema.properties) || {};
  const required = new Set((item.schema && item.schema.required) || []);
  const inputs = Object.entries(properties).map(([name, spec]) => {
    let control;
    if (Array.isArray(spec.enum)) control = select(name, spec.enum.map((v) => [String(v), String(v)]), String(spec.default ?? spec.enum[0]));
    else if (spec.type === 'boolean') control = h('input', { type: 'checkbox', name, checked: Boolean(spec.default) });
    else if (spec.type === 'number' || spec.type === 'integer') control = h('input', { type: 'number', name, step: spec.type === 'integer' ? '1' : 'any', required: required.has(name), value: typeof spec.default === 'number' ? String(spec.default) : '' });
    else control = h('input', { type: 'text', name, required: required.has(name), value: typeof spec.default === 'string' ? spec.default : '' });
    return { name, spec, control, wrapper: field(spec.title || name, control, spec.description) };
  });
  const form = h('form', { class: 'question' }, inputs.map((i) => i.wrapper),
    h('div', { class: 'buttons' }, h('button', { type: 'submit' }, 'Send answer'),
      h('button', { type: 'button', onclick: () => onAnswer({ action: 'decline' }) }, 'Decline'),
      h('button', { type: 'button', onclick: () => onAnswer({ action: 'cancel' }) }, 'Cancel')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const content = {};
    for (const { name, spec, control } of inputs) {
      if (control.type === 'checkbox') content[name] = control.checked;
      else if (spec.type === 'number' || spec.type === 'integer') { if (control.value !== '') content[name] = Number(control.value); }
      else if (control.value !== '') content[name] = control.value;
    }
    onAnswer({ action: 'accept', content });
  });
  return form;
}

function inboxItem(item, onAnswered) {
  const answer = (body) => busy(null, async () => {
    await cortex.answer(item.id, body);
    onAnswered(item);
  });
  const mine = !item.requester_id || item.requester_id === me();
  const details = item.kind === 'approval'
    ? [h('p', null, h('strong', null, `${item.expert} · ${item.tool}`), ' wants to run with these arguments:'),
       h('pre', { class: 'arguments' }, JSON.stringify(item.arguments ?? {}, null, 2))]
    : [h('p', null, h('strong', null, item.expert || 'An expert'), ' asks: '), h('p', { class: 'text' }, item.message || ''),
       item.url ? h('p', null, 'Open: ', externalLink(item.url)) : null];
  const actions = item.kind === 'approval'
    ? h('div', { class: 'buttons' }, h('button', { type: 'button', onclick: () => answer({ decision: 'approve' }) }, 'Approve'), h('button', { type: 'button', onclick: () => answer({ decision: 'deny' }) }, 'Deny'))
    : item.connect
      ? h('div', { class: 'buttons' }, h('button', { type: 'button', onclick: (e) => connectAccount(e.currentTarget, item.connect.expert_id) }, `Connect ${item.connect.expert}`), h('button', { type: 'button', onclick: () => answer({ action: 'decline' }) }, 'Decline'))
    : item.url
      ? h('div', { class: 'buttons' }, h('button', { type: 'button', onclick: () => answer({ action: 'accept' }) }, 'Done'), h('button', { type: 'button', onclick: () => answer({ action: 'decline' }) }, 'Decline'))
      : questionForm(item, answer);
  return h('li', { class: `inbox-item ${item.kind}`, dataset: { id: item.id } },
    h('p', { class: 'muted' }, item.kind === 'approval' ? 'Approval' : 'Question', ' · ', topicOf(item.conversation_id), ' · expires ', time(item.expires_at)),
    details, mine ? actions : h('p', { class: 'muted' }, 'Only the person who asked can answer.'));
}

function showInbox() {
  const list = h('ol', { class: 'inbox', 'aria-label': 'Open requests' });
  const empty = h('p', { class: 'muted' }, 'Nothing is waiting for you.');
  const current = mount('inbox', heading('Inbox'), empty, list);
  const render = () => {
    empty.hidden = Boolean(data.inbox && data.inbox.length);
    fill(list, (data.inbox || []).map((item) => inboxItem(item, (answered) => {
      data.inbox = data.inbox.filter((i) => i.id !== answered.id);
      notify('Answered.');
      render();
      renderNav();
    })));
  };
  current.reload = render;
  render();
}

// ----- my memory --------------------------------------------------------------------------------------

function showMemory() {
  const query = h('input', { type: 'search', name: 'query' });
  const search = h('form', { class: 'inline', role: 'search' }, field('Search my memory', query), h('button', { type: 'submit' }, 'Search'));
  const content = h('textarea', { name: 'content', rows: '2', required: true });
  const add = h('form', null, field('Something to remember', content), h('button', { type: 'submit' }, 'Remember'));
  const list = h('ol', { class: 'memory', 'aria-label': 'Memory items' });
  const more = h('button', { type: 'button', class: 'link', hidden: true }, 'Load more');
  let cursor = null;
  mount('memory', heading('My memory'), h('p', { class: 'muted' }, 'What the assistant remembers about you: correct it or remove it.'), search, add, list, more);

  function row(item) {
    const text = h('p', { class: 'text' }, item.content);
    const li = h('li', { class: 'memory-item', dataset: { id: item.id } },
      h('p', { class: 'muted' }, time(item.timestamp), ' · ', item.conversation_id ? topicOf(item.conversation_id) : 'not from a conversation', item.score !== undefined ? ` · score ${Number(item.score).toFixed(2)}` : ''),
      text);
    const edit = h('button', { type: 'button', onclick: () => {
      const area = h('textarea', { rows: '3', value: item.content, 'aria-label': 'Corrected text' });
      const save = h('button', { type: 'button', onclick: () => busy(save, async () => {
        const updated = await cortex.correctMemory(item.id, area.value);
        item.content = updated && updated.content !== undefined ? updated.content : area.value;
        li.replaceWith(row(item));
      }) }, 'Save');
      const cancel = h('button', { type: 'button', onclick: () => li.replaceWith(row(item)) }, 'Cancel');
      text.replaceWith(h('div', { class: 'edit' }, area, save, cancel));
      buttons.remove();
      area.focus();
    } }, 'Edit');
    const forget = h('button', { type: 'button', class: 'danger', onclick: () => {
      if (!window.confirm('Forget this for good?')) return;
      busy(forget, async () => {
        await cortex.forgetMemory(item.id);
        li.remove();
      });
    } }, 'Forget');
    const buttons = h('div', { class: 'buttons' }, edit, forget);
    li.append(buttons);
    return li;
  }

  async function load(reset) {
    if (reset) {
      cursor = null;
      list.replaceChildren();
    }
    const page = await cortex.memory({ query: query.value.trim() || undefined, cursor: cursor || undefined, limit: 50 });
    if (!page) return;
    append(list, page.items.map(row));
    cursor = page.next_cursor || null;
    more.hidden = !cursor;
  }

  search.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(search.querySelector('button'), () => load(true));
  });
  add.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(add.querySelector('button'), async () => {
      const item = await cortex.remember(content.value);
      content.value = '';
      list.prepend(row(item));
    });
  });
  more.addEventListener('click', () => busy(more, () => load(false)));
  load(true).catch(failed);
}

// ----- experts (workspace owners) ---------------------------------------------------------------------

function expertCard(workspace, expert, onChange) {
  const policies = expert.tool_policy;
  const tools = h('ul', { class: 'tools' }, (expert.tools || []).map((tool) => {
    let control = null;
    if (policies && typeof policies === 'object') {
      const current = policies[tool.name] || '';
      control = select(`policy-${tool.name}`, [['', 'Default'], ...TOOL_POLICIES], current);
      control.setAttribute('aria-label', `Policy for ${tool.name}`);
      control.addEventListener('change', () => busy(control, async () => {
        const next = { ...(expert.tool_policy || {}) };
        if (control.value) next[tool.name] = control.value;
        else delete next[tool.name];
        onChange(await cortex.updateExpert(workspace.id, expert.id, { tool_policy: next }));
      }));
    }
    return h('li', null, h('strong', null, tool.name), ' ', h('span', { class: 'muted' }, tool.description || ''), control);
  }));
  const allow = h('input', { name: 'tools', value: (expert.allowed_tools || []).join(', '), placeholder: 'all tools' });
  const allowForm = h('form', { class: 'inline' }, field('Allowed tools', allow, 'Comma-separated; empty allows every tool.'), h('button', { type: 'submit' }, 'Save'));
  allowForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const names = participantIds(allow.value);
    busy(allowForm.querySelector('button'), async () => onChange(await cortex.updateExpert(workspace.id, expert.id, { tools: names.length ? names : null })));
  });
  return h('li', { class: 'expert card', dataset: { id: expert.id } },
    h('h4', null, expert.name, ' ', h('span', { class: `badge ${expert.status}` }, expert.status)),
    h('p', { class: 'muted mono' }, expert.url, ' · ', expert.auth),
    expert.last_error ? h('p', { class: 'error' }, expert.last_error) : null,
    tools, allowForm,
    h('div', { class: 'buttons' },
      h('button', { type: 'button', onclick: (e) => busy(e.currentTarget, async () => onChange(await cortex.refreshExpert(workspace.id, expert.id))) }, 'Refresh tools'),
      h('button', { type: 'button', class: 'danger', onclick: (e) => {
        if (!window.confirm(`Remove the expert ${expert.name}?`)) return;
        busy(e.currentTarget, async () => {
          await cortex.deleteExpert(workspace.id, expert.id);
          onChange(null);
        });
      } }, 'Remove')));
}

function showExperts() {
  const sections = data.workspaces.map((workspace) => {
    const list = h('ul', { class: 'experts' });
    let experts = [];
    const render = () => fill(list, experts.map((expert) => expertCard(workspace, expert, (updated) => {
      experts = updated ? experts.map((e) => (e.id === expert.id ? updated : e)) : experts.filter((e) => e.id !== expert.id);
      render();
    })));
    const name = h('input', { name: 'name', required: true, pattern: '[-a-zA-Z0-9_]+', maxlength: '64' });
    const url = h('input', { name: 'url', type: 'url', required: true, placeholder: 'http://127.0.0.1:9200/mcp' });
    const auth = select('auth', [['core_token', 'A token minted by Cortex for each call'], ['oauth', "Each person's own account (OAuth)"], ['none', 'No authentication']], 'core_token');
    const form = h('form', null, field('Name', name, 'Users call it as /name tool {json}.'), field('MCP URL', url), field('Authentication', auth),
      h('button', { type: 'submit' }, 'Register expert'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      busy(form.querySelector('button'), async () => {
        experts.push(await cortex.registerExpert(workspace.id, { name: name.value.trim(), url: url.value.trim(), auth: auth.value }));
        name.value = '';
        render();
      });
    });
    cortex.experts(workspace.id).then((found) => {
      experts = found;
      render();
    }, failed);
    return h('section', { class: 'card' }, h('h3', null, workspace.name), list, h('details', { class: 'create' }, h('summary', null, 'Register an expert'), form));
  });
  mount('experts', heading('Experts'), h('p', { class: 'muted' }, 'MCP servers whose tools the assistant may use in your workspaces.'), sections);
}

// ----- connected accounts -------------------------------------------------------------------------------

/** Off to the expert's authorization server; it sends the browser back here (`?connected=`). */
function connectAccount(button, expertId) {
  busy(button, async () => {
    location.assign(await cortex.startConnection(expertId, '/console/#/connections'));
  });
}

function showConnections() {
  const params = new URL(location.href).searchParams;
  if (params.has('connected')) notify('Account connected.');
  if (params.has('connect_error')) failed(new Error(`Connecting failed: ${params.get('connect_error')}`));
  const list = h('ul', { class: 'experts connections' });
  const empty = h('p', { class: 'muted' }, 'No expert here asks for your own account.');
  const labels = { connected: 'connected', not_connected: 'not connected', needs_reconsent: 'connect again' };
  const render = (connections) => {
    empty.hidden = connections.length > 0;
    fill(list, connections.map((item) => h('li', { class: 'expert card', dataset: { id: item.expert_id } },
      h('h4', null, item.expert, ' ', h('span', { class: `badge ${item.status}` }, labels[item.status] || item.status)),
      item.scopes.length ? h('p', { class: 'muted mono' }, item.scopes.join(' ')) : null,
      h('div', { class: 'buttons' },
        item.status === 'connected' ? null : h('button', { type: 'button', onclick: (e) => connectAccount(e.currentTarget, item.expert_id) }, 'Connect'),
        item.status === 'not_connected' ? null : h('button', { type: 'button', class: 'danger', onclick: (e) => busy(e.currentTarget, async () => {
          await cortex.disconnect(item.expert_id);
          render(await cortex.connections());
        }) }, 'Disconnect')))));
  };
  mount('connections', heading('Connected accounts'), h('p', { class: 'muted' }, 'Experts run by others act with your own account there; connect it once, disconnect it any time.'), empty, list);
  cortex.connections().then(render, failed);
}

/** The person's model usage (tokens by day, workspace, conversation or model) and their monthly budget. */
function showUsage() {
  const number = (value) => Number(value || 0).toLocaleString();
  const budget = h('p', { id: 'usage-budget', class: 'muted' });
  const meter = h('progress', { id: 'usage-meter', max: 1, value: 0, hidden: true });
  const table = h('table', { class: 'usage' });
  const group = h('select', { id: 'usage-group', 'aria-label': 'Group by' },
    ['day', 'workspace', 'conversation', 'model'].map((key) => h('option', { value: key }, key)));
  const load = () => cortex.usage({ groupBy: group.value }).then((usage) => {
    const limit = usage.budget.tokens;
    fill(budget, [limit
      ? `This month: ${number(usage.budget.used)} of ${number(limit)} tokens (${Math.round((100 * usage.budget.used) / limit)}%).`
      : `This month: ${number(usage.budget.used)} tokens (no budget set).`]);
    meter.hidden = !limit;
    if (limit) { meter.max = limit; meter.value = Math.min(usage.budget.used, limit); }
    fill(table, [
      h('thead', null, h('tr', null, ['', 'turns', 'input tokens', 'output tokens', 'tool calls'].map((title) => h('th', null, title)))),
      h('tbody', null, usage.items.map((item) => h('tr', null,
        h('td', { class: 'mono' }, item.key || '(none)'),
        [item.turns, item.input_tokens, item.output_tokens, item.tool_calls].map((value) => h('td', null, number(value)))))),
    ]);
  }, failed);
  group.addEventListener('change', load);
  mount('usage', heading('Usage'), budget, meter, h('label', null, 'Group by ', group), table);
  load();
}

// ----- boot -------------------------------------------------------------------------------------------

/**
 * A sign-in link (`?login_code=`) opened where someone is already signed in: ask before the
 * session is replaced (the link may come from someone else). Resolves true to use the link.
 */
function confirmLoginCode(user) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { id: 'login-code-confirm', class: 'card', 'aria-labelledby': 'login-code-title' });
    const choose = (useLink) => {
      dialog.close();
      dialog.remove();
      resolve(useLink);
    };
    const stay = h('button', { type: 'button', 'data-choice': 'stay', onclick: () => choose(false) },
      `Stay signed in as ${user.email || user.name || user.oid}`);
    const use = h('button', { type: 'button', class: 'link', 'data-choice': 'switch', onclick: () => choose(true) },
      'Sign in with the link instead');
    dialog.addEventListener('cancel', (event) => {
      event.preventDefault();
      choose(false);
    });
    append(dialog, [
      h('h2', { id: 'login-code-title' }, 'Switch accounts?'),
      h('p', null, 'This page was opened with a sign-in link, but you are already signed in as ',
        h('strong', null, user.email || user.name || user.oid), '. Use the link only if you just signed in ',
        'with a provider yourself: a link someone sent you signs you in as them.'),
      stay, ' ', use]);
    document.body.append(dialog);
    dialog.showModal();
    stay.focus();
  });
}

async function boot() {
  try {
    const code = cortex.takeLoginCode();
    if (code) {
      const signedIn = await cortex.resume();
      if (!signedIn || await confirmLoginCode(cortex.user)) {
        if (await cortex.redeemLoginCode(code)) return undefined; // 'session' starts the console
      }
      if (signedIn) return undefined;
    }
  } catch (error) {
    failed(error);
  }
  if (await cortex.resume()) return undefined;
  return showSignIn();
}

boot();
