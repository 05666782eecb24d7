// One assistant reply as it streams: its text (or, with logprobs, its tokens) per choice, and what the
// server knows about it: prompt and completion tokens (stream_options.include_usage), time to first
// token, tokens per second after the first, and each choice's finish reason. The DOM is updated at most
// once per animation frame, however many chunks arrive in between; the stats line has its final size from
// the start, so the page does not move when numbers come in.

import { renderError } from "./api.js";

export const TOKEN_DATA = new WeakMap(); // token <span> -> its logprob and top alternatives (tokens.js)

const STATS = [
  ["prompt", "prompt tokens"],
  ["completion", "completion tokens"],
  ["ttft", "time to first token"],
  ["rate", "completion tokens per second after the first token"],
  ["finish", "finish reason"],
];

export function statsLine() {
  const line = document.createElement("div");
  line.className = "stats";
  for (const [name, title] of STATS) {
    const stat = document.createElement("span");
    stat.dataset.stat = name;
    stat.title = title;
    const label = document.createElement("span");
    label.className = "stat-label";
    label.textContent = { prompt: "prompt", completion: "completion", ttft: "TTFT", rate: "tok/s", finish: "finish" }[name];
    const value = document.createElement("span");
    value.className = "stat-value";
    value.textContent = "—";
    stat.append(label, value);
    line.append(stat);
  }
  return line;
}

export function setStat(line, name, text) {
  line.querySelector(`[data-stat="${name}"] .stat-value`).textContent = text;
}

export function renderTokens(container, tokens, from = 0) {
  for (const token of tokens.slice(from)) {
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = token.token;
    const p = Math.exp(token.logprob);
    span.style.setProperty("--p", p.toFixed(3)); // shades the token: less likely is darker
    TOKEN_DATA.set(span, token);
    container.append(span);
  }
}

export class Reply {
  /** `meta` is the message's record in the lane's history; the reply fills it in as it streams. */
  constructor(element, meta) {
    this.element = element;
    this.meta = meta;
    this.choices = element.querySelector(".choices");
    this.stats = element.querySelector(".stats");
    this.errorBox = element.querySelector(".api-error");
    this.shown = new Map(); // choice index -> tokens already on the page
    this.frame = 0;
    this.started = performance.now();
    this.firstAt = null;
    this.lastAt = null;
  }

  choice(index) {
    while (this.meta.choices.length <= index) this.meta.choices.push({ text: "", tokens: [], ids: 0, finish: null });
    return this.meta.choices[index];
  }

  delta(index, text, tokens, ids) {
    const choice = this.choice(index);
    choice.ids += ids?.length || 0;
    const now = performance.now();
    if (text && this.firstAt === null) this.firstAt = now;
    if (text) this.lastAt = now;
    choice.text += text || "";
    if (tokens) choice.tokens.push(...tokens);
    this.schedule();
  }

  finish(index, reason) {
    this.choice(index).finish = reason;
    this.schedule();
  }

  usage(usage) {
    this.meta.usage = usage;
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    this.meta.choices.forEach((choice, index) => {
      let box = this.choices.querySelector(`[data-index="${index}"]`);
      if (!box) {
        box = document.createElement("div");
        box.className = "choice content";
        box.dataset.index = String(index);
        this.choices.append(box);
      }
      if (this.meta.choices.length > 1) box.dataset.label = `choice ${index}`;
      if (choice.tokens.length) {
        const from = this.shown.get(index) || 0;
        renderTokens(box, choice.tokens, from);
        this.shown.set(index, choice.tokens.length);
      } else if (box.textContent !== choice.text) {
        box.textContent = choice.text;
      }
    });
    this.renderStats();
  }

  renderStats() {
    const { usage } = this.meta;
    if (this.firstAt !== null) setStat(this.stats, "ttft", `${Math.round(this.firstAt - this.started)} ms`);
    const counted = this.meta.choices.reduce((sum, c) => sum + c.ids, 0);
    if (usage) {
      setStat(this.stats, "prompt", String(usage.prompt_tokens));
      setStat(this.stats, "completion", String(usage.completion_tokens));
    } else if (this.meta.state === "stopped" && counted) {
      setStat(this.stats, "completion", `${counted} streamed`); // no usage comes after a stop
    }
    const completion = usage?.completion_tokens ?? (this.meta.state === "stopped" ? counted : 0);
    const seconds = (this.lastAt - this.firstAt) / 1000;
    const after = completion - this.meta.choices.length; // each choice's first token is TTFT's
    if (seconds > 0 && after > 0) setStat(this.stats, "rate", (after / seconds).toFixed(1));
    const reasons = [...new Set(this.meta.choices.map((c) => c.finish).filter(Boolean))];
    if (this.meta.state === "stopped") reasons.push("stopped");
    if (reasons.length) setStat(this.stats, "finish", reasons.join(", "));
  }

  end(state, error) {
    this.meta.state = state;
    this.element.dataset.state = state;
    this.element.removeAttribute("aria-busy"); // a screen reader reads the reply once, whole
    if (error) {
      this.meta.error = error;
      renderError(this.errorBox, error);
      this.errorBox.hidden = false;
    }
    cancelAnimationFrame(this.frame);
    this.render();
  }
}
