// Building the DOM without HTML strings: elements, attributes and text nodes only. Whatever users,
// models and experts wrote is passed as a child and becomes a text node, so it is never parsed as
// markup. (The page's Content-Security-Policy requires Trusted Types: an innerHTML assignment with a
// string would throw, so this is the only way to build the page.)

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'open', 'required', 'multiple', 'readOnly']);

/** h('button', {type: 'button', onclick: f, class: 'x'}, 'text', child, [more]) */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') element.addEventListener(key.slice(2), value);
    else if (key === 'class') element.className = value;
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (PROPERTIES.has(key)) element[key] = value;
    else element.setAttribute(key, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Replace an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/** A safe link for a URL that came from outside (an expert's question): http(s) only, else text. */
export function externalLink(url, label) {
  let parsed = null;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')) return h('code', null, String(url));
  return h('a', { href: parsed.href, target: '_blank', rel: 'noopener noreferrer' }, label || parsed.href);
}

export function time(value) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return h('span', null, '');
  return h('time', { datetime: date.toISOString(), title: date.toLocaleString() }, date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }));
}

let fieldCounter = 0;

/** A labelled control: {label, control} where control is an element; returns a wrapper div. */
export function field(label, control, hint) {
  fieldCounter += 1;
  const id = control.id || `field-${fieldCounter}`;
  control.id = id;
  const hintElement = hint ? h('small', { id: `${id}-hint`, class: 'hint' }, hint) : null;
  if (hintElement) control.setAttribute('aria-describedby', hintElement.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintElement);
}

export function select(name, options, current) {
  return h('select', { name }, options.map(([value, label]) => h('option', { value, selected: value === current }, label)));
}
