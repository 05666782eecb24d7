// The page's wiring: the API key, the model list, the lanes (one, or two in Compare), the composer and
// its keys (Enter sends, Shift+Enter adds a line, Escape stops), and the dialog that shows snippets and
// the rendered chat template.

import { apiKey, getJson, renderError, setApiKey } from "./api.js";
import { Lane } from "./lane.js";
import { readRanges } from "./params.js";
import { curl, messagesJson, python } from "./snippets.js";
import { attachTooltip } from "./tokens.js";

const $ = (selector) => document.querySelector(selector);

class Page {
  constructor() {
    this.lanes = [];
    this.models = [];
    this.ranges = {};
    this.busy = false;
    this.controller = null;
    this.template = $("#lane-template");
    this.input = $("#input");
    this.send = $("#send");
    this.stop = $("#stop");
    this.compare = $("#compare");
    this.dialog = $("#dialog");
  }

  async start() {
    $("#api-key").value = apiKey();
    $("#api-key").addEventListener("change", async (event) => {
      setApiKey(event.target.value.trim());
      await this.load();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.sendMessage();
      }
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.busy) this.controller.abort();
    });
    this.send.addEventListener("click", () => this.sendMessage());
    this.stop.addEventListener("click", () => this.controller?.abort());
    this.compare.addEventListener("click", () => this.toggleCompare());
    $("#clear").addEventListener("click", () => {
      for (const lane of this.lanes) { lane.messages = []; lane.render(); }
    });
    this.dialog.querySelector(".close").addEventListener("click", () => this.dialog.close());
    this.dialog.querySelector(".copy-text").addEventListener("click", () => this.copyDialogText());
    attachTooltip($("#lanes"), $("#tooltip"));
    await this.load();
  }

  /** Ranges from the published schema, then the models; again whenever the API key changes. */
  async load() {
    this.notify("");
    try {
      this.ranges = readRanges(await getJson("openapi.json"));
    } catch {
      this.ranges = {}; // no hints: the fields still work, and the API still checks them
    }
    if (!this.lanes.length) this.addLane();
    else this.lanes.forEach((lane) => lane.setRanges(this.ranges));
    try {
      this.models = (await getJson("v1/models")).data;
    } catch (error) {
      this.models = [];
      this.notify(error);
    }
    this.lanes.forEach((lane, i) => lane.setModels(this.models, i ? this.models[1]?.id : undefined));
    document.body.dataset.models = String(this.models.length); // lets a test wait for the list
  }

  addLane() {
    const lane = new Lane("AB"[this.lanes.length], this.template, this.ranges, this);
    this.lanes.push(lane);
    $("#lanes").append(lane.element);
    $("#lanes").dataset.count = String(this.lanes.length);
    return lane;
  }

  toggleCompare() {
    if (this.busy) return;
    if (this.lanes.length === 1) {
      const [first] = this.lanes;
      const second = this.addLane();
      // Another served model when there is one (a base model and its adapter, say), else the same model:
      // then the two lanes differ by their parameters.
      const other = this.models.find((m) => m.id !== first.model.value);
      second.setModels(this.models, other?.id || first.model.value);
      second.copyFrom(first);
      second.element.querySelector("details.params").open = true;
    } else {
      this.lanes.pop().element.remove();
      $("#lanes").dataset.count = "1";
    }
    this.compare.setAttribute("aria-pressed", String(this.lanes.length === 2));
  }

  systemPrompt() {
    return $("#system").value.trim();
  }

  async sendMessage() {
    const text = this.input.value;
    if (this.busy || !text.trim()) return;
    this.input.value = "";
    this.setBusy(true);
    this.controller = new AbortController();
    for (const lane of this.lanes) {
      lane.messages.push({ role: "user", content: text });
      lane.render();
    }
    await Promise.allSettled(this.lanes.map((lane) => lane.run(this.controller.signal)));
    this.setBusy(false);
    this.input.focus();
  }

  setBusy(busy) {
    this.busy = busy;
    document.body.dataset.busy = String(busy);
    this.send.disabled = busy;
    this.stop.disabled = !busy;
    this.compare.disabled = busy;
    $("#clear").disabled = busy;
  }

  notify(message) {
    const box = $("#notice");
    if (!message) { box.hidden = true; box.replaceChildren(); return; }
    if (typeof message === "string") box.textContent = message;
    else renderError(box, message);
    box.hidden = false;
  }

  exportLane(lane) {
    const request = lane.request();
    const base = new URL(".", location.href).href.replace(/\/$/, "");
    const withKey = Boolean(apiKey());
    this.showDialog(`Lane ${lane.name}: the conversation as code`, [
      ["messages (JSON)", messagesJson(request)],
      ["curl", curl(request, base, withKey)],
      ["Python (openai)", python(request, base, withKey)],
    ]);
  }

  /** A dialog with one tab per [name, text]; Copy copies the tab shown. */
  showDialog(title, tabs) {
    this.dialog.querySelector(".dialog-title").textContent = title;
    const bar = this.dialog.querySelector(".tabs");
    const body = this.dialog.querySelector(".dialog-text");
    const show = (index) => {
      body.textContent = tabs[index][1];
      bar.querySelectorAll("button").forEach((b, i) => b.setAttribute("aria-selected", String(i === index)));
    };
    bar.replaceChildren(...tabs.map(([name], index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("role", "tab");
      button.textContent = name;
      button.addEventListener("click", () => show(index));
      return button;
    }));
    show(0);
    if (!this.dialog.open) this.dialog.showModal();
  }

  async copyDialogText() {
    const body = this.dialog.querySelector(".dialog-text");
    const status = this.dialog.querySelector(".copy-status");
    try {
      await navigator.clipboard.writeText(body.textContent);
      status.textContent = "copied";
    } catch {
      // No clipboard outside a secure context (http:// to another host): select it for Ctrl+C instead.
      getSelection().selectAllChildren(body);
      status.textContent = "selected: press Ctrl+C";
    }
  }
}

new Page().start();
