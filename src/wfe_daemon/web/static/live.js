// Following /api/v1/events from a view.

import { API, onLeave } from "./common.js";

// Follows /api/v1/events (optionally one run's); handlers by event name. The browser
// reconnects by itself, and when it gives up (the daemon was down when it retried) a new
// stream is opened after a pause. Either way the view reads its state again once the
// stream is back ("reset"): a stream that had seen no event yet has no Last-Event-ID to
// resume from, so the server could not say what was missed.
export function follow(query, handlers) {
  const live = document.getElementById("live");
  const setLive = (text, on) => {
    live.textContent = text;
    live.className = on ? "live on" : "live";
  };
  let source = null;
  let timer = null;
  let pause = 1000;
  let broken = false;
  const open = () => {
    source = new EventSource(`${API}/events${query}`);
    source.addEventListener("open", () => {
      setLive("live", true);
      pause = 1000;
      if (broken && handlers.reset) handlers.reset({});
      broken = false;
    });
    source.addEventListener("error", () => {
      setLive("reconnecting", false);
      broken = true;
      if (source.readyState !== EventSource.CLOSED) return;
      timer = setTimeout(open, pause);
      pause = Math.min(pause * 2, 15000);
    });
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => {
        let data = {};
        try {
          data = JSON.parse(event.data || "{}");
        } catch (_) {
          return;
        }
        handler(data);
      });
    }
  };
  open();
  onLeave(() => {
    clearTimeout(timer);
    source.close();
    setLive("", false); // a view that does not follow shows no dot
  });
}
