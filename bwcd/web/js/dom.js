// Building the page: elements are made with text content and properties,
// never from HTML strings, so nothing an event or a payload carries can
// become markup or script.

/**
 * An element: h('a', {href: '#/x', class: 'y', onclick: f}, 'text', child).
 * Keys starting with "on" add listeners; "class", "text", "dataset" and
 * boolean/aria attributes are handled; other keys become attributes.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'text') {
      el.textContent = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside `el` by `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A message line: kind is "error", "muted" or "ok". */
export function note(text, kind = 'muted') {
  return h('p', {class: kind, role: kind === 'error' ? 'alert' : null}, text);
}
