// Following /api/v1/events from a view.
//
// The stream is read with fetch and a streaming body, not EventSource, which cannot send
// the Authorization header a bind other than loopback needs: one code path with or without
// a token. Its frames are parsed as EventSource parses them, and it reconnects the same
// way, sending the last event's id as Last-Event-ID.

import { API, httpError, onLeave, readHeaders, refused, savedToken } from "./common.js";

// The Server-Sent Events parser: text in, `dispatch(type, data)` per event. It keeps what
// a reconnection needs across streams: the last event's id and the server's `retry`.
export class Frames {
  constructor(dispatch) {
    this.dispatch = dispatch;
    this.lastId = "";
    this.retry = null;
    this.restart();
  }

  // A new stream: what an unfinished event of the last one held is dropped.
  restart() {
    this.rest = "";
    this.id = this.lastId;
    this.type = "";
    this.data = [];
  }

  feed(text) {
    let chunk = this.rest + text;
    // a "\r" at the end may be the first half of "\r\n": kept until the next chunk
    const held = chunk.endsWith("\r") ? "\r" : "";
    if (held) chunk = chunk.slice(0, -1);
    const lines = chunk.split(/\r\n|\r|\n/);
    this.rest = lines.pop() + held;
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      this.end();
      return;
    }
    if (line.startsWith(":")) return; // a comment (": keep-alive")
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") this.data.push(value);
    else if (name === "event") this.type = value;
    else if (name === "id" && !value.includes("\0")) this.id = value;
    else if (name === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }

  // A blank line: the event is complete (one without data is not dispatched).
  end() {
    this.lastId = this.id;
    const { type, data } = this;
    this.type = "";
    this.data = [];
    if (data.length) this.dispatch(type || "message", data.join("\n"));
  }
}

// A handler's error is reported as the browser reports any other; the stream goes on.
function handle(handler, event) {
  try {
    handler(event);
  } catch (err) {
    setTimeout(() => {
      throw err;
    });
  }
}

const FIRST_PAUSE_MS = 1000;
const LONGEST_PAUSE_MS = 15000;

// Follows /api/v1/events (optionally one run's); handlers by event name. When the stream
// ends or cannot be opened it is opened again after a pause (1 s or the server's `retry`,
// doubling up to 15 s while it fails), with Last-Event-ID once an event came, so
// the server sends what was missed, or `reset` when it cannot. A stream that had seen no
// event has no id to resume from: the view reads its state again ("reset") once it is back.
// A 401 (the token missing or wrong) stops following and asks for the token.
//
// Returns a promise settled once the first stream is open (the server has placed its
// reader: every later event comes) or has failed: a view reads its state after it, so no
// transition falls between that read and the stream.
export function follow(query, handlers) {
  let settle;
  const connected = new Promise((resolve) => {
    settle = resolve;
  });
  const live = document.getElementById("live");
  const setLive = (text, on) => {
    live.textContent = text;
    live.className = on ? "live on" : "live";
  };
  const frames = new Frames((type, data) => {
    const handler = Object.hasOwn(handlers, type) ? handlers[type] : null;
    if (!handler) return;
    let event = {};
    try {
      event = JSON.parse(data || "{}");
    } catch (_) {
      return;
    }
    handle(handler, event);
  });
  let controller = null;
  let timer = null;
  let pause = null; // the next pause after a failure; null: the stream was open
  let broken = false;
  let stopped = false;
  const again = () => {
    settle();
    if (stopped) return;
    setLive("reconnecting", false);
    broken = true;
    const wait = pause ?? frames.retry ?? FIRST_PAUSE_MS;
    timer = setTimeout(open, wait);
    pause = Math.min(wait * 2, LONGEST_PAUSE_MS);
  };
  const opened = () => {
    settle();
    setLive("live", true);
    pause = null;
    if (broken && !frames.lastId && handlers.reset) handle(handlers.reset, {});
    broken = false;
  };
  const open = async () => {
    controller = new AbortController();
    const sent = savedToken();
    const headers = readHeaders("text/event-stream", sent);
    if (frames.lastId) headers["Last-Event-ID"] = frames.lastId;
    try {
      const response = await fetch(`${API}/events${query}`,
        { headers, cache: "no-store", signal: controller.signal });
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.startsWith("text/event-stream")) {
        const err = await httpError(response);
        if (response.status === 401 && refused(sent, err)) {
          settle();
          return;
        }
        again();
        return;
      }
      opened();
      frames.restart();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        frames.feed(value);
      }
    } catch (_) {
      // the daemon is down or the stream was cut (or the view left: `stopped`)
    }
    again();
  };
  open();
  onLeave(() => {
    stopped = true;
    clearTimeout(timer);
    if (controller) controller.abort();
    setLive("", false); // a view that does not follow shows no dot
    settle();
  });
  return connected;
}
