// A lane: one model with one parameter set and its own copy of the conversation. The page has one lane,
// or two side by side in Compare, which are sent the same user message at once and stream at once.

import { ApiError, messageOf, post, renderError } from "./api.js";
import { buildForm, collect, copyForm, rebuildForm } from "./params.js";
import { Reply, renderTokens, setStat, statsLine } from "./reply.js";
import { sseData } from "./sse.js";

export class Lane {
  constructor(name, template, ranges, page) {
    this.name = name;
    this.page = page; // system prompt, dialog, models
    this.messages = []; // {role, content, meta?}; meta: a reply's choices, usage, state, error
    this.element = template.content.firstElementChild.cloneNode(true);
    this.element.dataset.lane = name;
    this.element.querySelector(".lane-name").textContent = name;
    this.model = this.element.querySelector("select.model");
    this.form = this.element.querySelector(".param-grid");
    this.list = this.element.querySelector(".messages");
    this.scroller = this.element.querySelector(".scroller");
    this.stick = true; // keep the newest text in view, unless the user scrolled up to read
    this.scroller.addEventListener("scroll", () => { this.stick = this.atBottom(); });
    buildForm(this.form, ranges);
    this.element.querySelector(".copy").addEventListener("click", () => this.page.exportLane(this));
    this.element.querySelector(".template").addEventListener("click", () => this.showTemplate());
    this.list.addEventListener("click", (event) => this.onListClick(event));
  }

  setModels(models, preferred) {
    const current = preferred || this.model.value;
    this.model.replaceChildren(...models.map((m) => new Option(m.parent ? `${m.id} (adapter of ${m.parent})` : m.id, m.id)));
    if (models.some((m) => m.id === current)) this.model.value = current;
  }

  setRanges(ranges) {
    rebuildForm(this.form, ranges);
  }

  copyFrom(other) {
    copyForm(other.form, this.form);
    this.messages = other.messages.map(({ role, content }) => ({ role, content }));
    this.render();
  }

  /** The request body this lane sends (stream fields excepted), or an Error for a field the page cannot read. */
  request() {
    const system = this.page.systemPrompt();
    const messages = [...(system ? [{ role: "system", content: system }] : []),
      // a reply that failed or was stopped before its first token is on the page, not in the conversation
      ...this.messages.filter((m) => !(m.meta && !m.content)).map(({ role, content }) => ({ role, content }))];
    return { model: this.model.value, messages, ...collect(this.form) };
  }

  // ---- the conversation on the page ----

  render() {
    this.list.replaceChildren(...this.messages.map((message, index) => this.messageElement(message, index)));
  }

  messageElement(message, index) {
    const li = document.createElement("li");
    li.className = `msg msg-${message.role}`;
    li.dataset.role = message.role;
    li.dataset.index = String(index);
    const head = document.createElement("div");
    head.className = "msg-head";
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = message.role;
    const tools = document.createElement("span");
    tools.className = "tools";
    for (const [action, label] of [["edit", "Edit"], ["delete", "Delete"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = action;
      button.textContent = label;
      tools.append(button);
    }
    head.append(role, tools);
    li.append(head);
    if (message.role !== "assistant" || !message.meta) {
      const content = document.createElement("div");
      content.className = "content";
      content.textContent = message.content;
      li.append(content);
      return li;
    }
    const choices = document.createElement("div");
    choices.className = "choices";
    const errorBox = document.createElement("div");
    errorBox.className = "api-error";
    errorBox.setAttribute("role", "alert");
    errorBox.hidden = true;
    li.append(choices, statsLine(), errorBox);
    li.dataset.state = message.meta.state || "streaming";
    this.fillReply(li, message.meta);
    return li;
  }

  /** A finished reply drawn again (after an edit elsewhere): the same text, tokens and numbers. */
  fillReply(li, meta) {
    const choices = li.querySelector(".choices");
    meta.choices.forEach((choice, index) => {
      const box = document.createElement("div");
      box.className = "choice content";
      box.dataset.index = String(index);
      if (meta.choices.length > 1) box.dataset.label = `choice ${index}`;
      if (choice.tokens.length) renderTokens(box, choice.tokens);
      else box.textContent = choice.text;
      choices.append(box);
    });
    const stats = li.querySelector(".stats");
    for (const [name, value] of Object.entries(meta.shown || {})) setStat(stats, name, value);
    if (meta.error) {
      const box = li.querySelector(".api-error");
      renderError(box, meta.error);
      box.hidden = false;
    }
  }

  onListClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || this.page.busy) return;
    const li = button.closest("li.msg");
    const index = Number(li.dataset.index);
    if (button.dataset.action === "delete") {
      this.messages.splice(index, 1);
      this.render();
    } else if (button.dataset.action === "edit") {
      this.edit(li, index);
    } else if (button.dataset.action === "save") {
      const text = li.querySelector("textarea.editor").value;
      this.messages[index] = { role: this.messages[index].role, content: text }; // an edited reply is plain text
      this.render();
    } else if (button.dataset.action === "cancel") {
      this.render();
    }
  }

  edit(li, index) {
    const editor = document.createElement("textarea");
    editor.className = "editor";
    editor.value = this.messages[index].content;
    editor.rows = Math.min(12, Math.max(2, editor.value.split("\n").length));
    const buttons = document.createElement("div");
    buttons.className = "edit-buttons";
    for (const [action, label] of [["save", "Save"], ["cancel", "Cancel"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = action;
      button.textContent = label;
      buttons.append(button);
    }
    li.querySelectorAll(".content, .choices, .stats, .api-error").forEach((node) => node.remove());
    li.append(editor, buttons);
    editor.focus();
  }

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  follow() {
    if (this.stick) this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  // ---- one turn ----

  /** Sends the conversation, streams the reply into the page and the history; resolves when it ends. */
  async run(signal) {
    let request;
    try {
      request = this.request();
    } catch (error) {
      this.page.notify(error.message);
      return;
    }
    const meta = { choices: [], state: "streaming" };
    const message = { role: "assistant", content: "", meta };
    this.messages.push(message);
    const li = this.messageElement(message, this.messages.length - 1);
    this.list.append(li);
    this.stick = true;
    this.follow();
    li.setAttribute("aria-busy", "true"); // the list is a live region: not announced token by token
    const reply = new Reply(li, meta);
    const observer = new MutationObserver(() => this.follow());
    let state = "done";
    let failure = null;
    try {
      // token_ids (vLLM's return_token_ids): a stopped reply gets no usage, but its tokens can be counted
      const body = { ...request, stream: true, stream_options: { include_usage: true }, return_token_ids: true };
      const response = await post("v1/chat/completions", body, signal);
      observer.observe(li, { childList: true, subtree: true, characterData: true });
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(0, "", data); // a stream that failed after it started
        if (chunk.usage) reply.usage(chunk.usage);
        for (const choice of chunk.choices || []) {
          reply.delta(choice.index, choice.delta?.content, choice.logprobs?.content, choice.token_ids);
          if (choice.finish_reason) reply.finish(choice.index, choice.finish_reason);
        }
      }
    } catch (error) {
      if (error.name === "AbortError") state = "stopped";
      else { state = "error"; failure = error; }
    } finally {
      observer.disconnect();
    }
    reply.end(state, failure);
    meta.shown = Object.fromEntries([...li.querySelectorAll(".stats [data-stat]")]
      .map((s) => [s.dataset.stat, s.querySelector(".stat-value").textContent]));
    message.content = meta.choices[0]?.text || "";
    this.follow();
  }

  async showTemplate() {
    try {
      const { model, messages } = this.request();
      const tokenized = await (await post("tokenize", { model, messages, add_generation_prompt: true })).json();
      // /tokenize answers token ids only; /detokenize turns them back into the text the model reads,
      // special tokens included.
      const text = await (await post("detokenize", { model, tokens: tokenized.tokens })).json();
      this.page.showDialog(`What ${model} reads: ${tokenized.count} tokens of ${tokenized.max_model_len}`,
        [["template", text.prompt], ["token ids", JSON.stringify(tokenized.tokens)]]);
    } catch (error) {
      this.page.showDialog("The chat template could not be rendered",
        [["error", error instanceof ApiError ? `HTTP ${error.status} ${error.statusText}\n${messageOf(error.raw) || ""}\n\n${error.raw}` : String(error)]]);
    }
  }
}
