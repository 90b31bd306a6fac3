// Keeping a page up to date: st2's event stream (GET /v1/stream, Server-Sent
// Events) when this daemon has it, else polling every 2 seconds.  A page
// says which events it follows and how to refresh itself; it gets events
// in stream mode and refresh calls in polling mode (and once whenever the
// stream (re)connects, to catch up).

import {hasRoute, streamURL} from './api.js';

export const POLL_MS = 2000;

let indicator = () => {};

export function showModeWith(callback) {
  indicator = callback;
}

/**
 * Follow `events` (st2 names, e.g. "st2.execution__update"): onEvent(name,
 * data) for each, refresh() when polling.  Returns a function that stops.
 */
export function follow(events, onEvent, refresh) {
  let stopped = false;
  let source = null;
  let timer = null;

  const poll = () => {
    indicator('polling');
    const tick = async () => {
      if (stopped) return;
      try {
        await refresh();
      } finally {
        if (!stopped) timer = setTimeout(tick, POLL_MS);
      }
    };
    timer = setTimeout(tick, POLL_MS);
  };

  // sessionStorage "bwcd.live" = "polling" keeps to polling (for a proxy
  // that buffers event streams)
  const pollingOnly = sessionStorage.getItem('bwcd.live') === 'polling';
  (pollingOnly ? Promise.resolve(false) : hasRoute('/v1/stream')).then((available) => {
    if (stopped) return;
    if (!available || typeof EventSource === 'undefined') {
      poll();
      return;
    }
    source = new EventSource(streamURL(events));
    source.addEventListener('open', () => {
      indicator('stream');
      refresh();
    });
    source.addEventListener('error', () => {
      // closed for good (an error status or not an event stream): poll
      if (source && source.readyState === EventSource.CLOSED && !stopped) {
        source = null;
        poll();
      }
    });
    for (const name of events) {
      source.addEventListener(name, (message) => {
        let data = null;
        try {
          data = JSON.parse(message.data);
        } catch (e) {
          return;
        }
        onEvent(name, data);
      });
    }
  });

  return () => {
    stopped = true;
    if (source) source.close();
    if (timer) clearTimeout(timer);
  };
}
