// The decoding parameters a lane sends, with the ranges and defaults the server publishes for them
// (GET /openapi.json, ChatCompletionRequest). Range hints mark a value out of range, but the value is sent
// all the same: the API's own answer to it (a 400 naming the parameter) is what the page shows.

export const PARAMS = [
  { name: "temperature", type: "number", step: 0.1, unset: "1" },
  { name: "top_p", type: "number", step: 0.05, unset: "1" },
  { name: "top_k", type: "integer", step: 1, unset: "off" },
  { name: "min_p", type: "number", step: 0.01 },
  { name: "max_tokens", type: "integer", step: 1, value: "128", unset: "the context's end" },
  { name: "min_tokens", type: "integer", step: 1 },
  { name: "seed", type: "integer", step: 1, unset: "random" },
  { name: "presence_penalty", type: "number", step: 0.1 },
  { name: "frequency_penalty", type: "number", step: 0.1 },
  { name: "repetition_penalty", type: "number", step: 0.05 },
  { name: "n", type: "integer", step: 1 },
  { name: "stop", type: "lines" },
  { name: "logprobs", type: "boolean", note: "per-token view: hover a token for its alternatives" },
  { name: "top_logprobs", type: "integer", step: 1, value: "5" },
  { name: "response_format", type: "schema" },
];
/** Fields of the OpenAI API itself; the others go in the Python client's extra_body (vLLM's names). */
export const OPENAI_FIELDS = new Set(["temperature", "top_p", "max_tokens", "seed", "presence_penalty",
  "frequency_penalty", "n", "stop", "logprobs", "top_logprobs", "response_format"]);

/** name -> {min, max, minExclusive, maxExclusive, default, description} from the published schema. */
export function readRanges(openapi) {
  const props = openapi?.components?.schemas?.ChatCompletionRequest?.properties || {};
  const out = {};
  for (const [name, schema] of Object.entries(props)) {
    const range = { default: schema.default, description: schema.description };
    for (const part of [schema, ...(schema.anyOf || [])]) {
      if ("minimum" in part) range.min = part.minimum;
      if ("exclusiveMinimum" in part) { range.min = part.exclusiveMinimum; range.minExclusive = true; }
      if ("maximum" in part) range.max = part.maximum;
      if ("exclusiveMaximum" in part) { range.max = part.exclusiveMaximum; range.maxExclusive = true; }
      if ("maxItems" in part) range.maxItems = part.maxItems;
    }
    out[name] = range;
  }
  return out;
}

function hint(param, range = {}) {
  const parts = [];
  if (range.min !== undefined || range.max !== undefined) {
    const low = range.min === undefined ? "" : `${range.min} ${range.minExclusive ? "<" : "≤"} `;
    const high = range.max === undefined ? "" : ` ${range.maxExclusive ? "<" : "≤"} ${range.max}`;
    parts.push(`${low}x${high}`);
  }
  if (range.default !== undefined && range.default !== null && param.type !== "boolean") {
    parts.push(`default ${range.default}`);
  } else if (param.unset) {
    parts.push(`unset: ${param.unset}`);
  }
  if (param.note) parts.push(param.note);
  if (param.type === "lines") parts.push(`one per line, up to ${range.maxItems ?? 16}; \\n for a newline`);
  return parts.join(" · ");
}

function field(param, range) {
  const label = document.createElement("label");
  label.className = `param param-${param.type}`;
  label.dataset.param = param.name;
  const name = document.createElement("span");
  name.className = "param-name";
  name.textContent = param.label || param.name;
  let input;
  if (param.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    label.append(input, name);
  } else if (param.type === "lines") {
    input = document.createElement("textarea");
    input.rows = 2;
    label.append(name, input);
  } else if (param.type === "schema") {
    return schemaField(param);
  } else {
    input = document.createElement("input");
    input.type = "number";
    input.step = String(param.step);
    if (range?.min !== undefined) input.min = String(range.min);
    if (range?.max !== undefined) input.max = String(range.max);
    input.value = param.value ?? "";
    input.placeholder = range?.default ?? "";
    label.append(name, input);
  }
  input.name = param.name;
  if (range?.description) label.title = range.description;
  const small = document.createElement("small");
  small.textContent = hint(param, range);
  label.append(small);
  return label;
}

function schemaField(param) {
  const box = document.createElement("label");
  box.className = "param param-schema";
  box.dataset.param = param.name;
  const name = document.createElement("span");
  name.className = "param-name";
  name.textContent = "response_format";
  const select = document.createElement("select");
  select.name = "response_format.type";
  for (const type of ["text", "json_object", "json_schema"]) select.append(new Option(type, type));
  const schema = document.createElement("textarea");
  schema.name = "response_format.schema";
  schema.rows = 4;
  schema.placeholder = '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}';
  schema.spellcheck = false;
  const small = document.createElement("small");
  small.textContent = "json_schema: the schema the reply must follow (constrained decoding)";
  box.append(name, select, schema, small);
  return box;
}

export function buildForm(container, ranges) {
  container.replaceChildren(...PARAMS.map((param) => field(param, ranges[param.name])));
}

/** The form's values as request fields; empty fields are left out (the server's default applies). */
export function collect(container) {
  const body = {};
  for (const param of PARAMS) {
    if (param.type === "schema") continue;
    const input = container.querySelector(`[name="${param.name}"]`);
    if (param.type === "boolean") {
      if (input.checked) body[param.name] = true;
    } else if (param.type === "lines") {
      const lines = input.value.split("\n").filter((line) => line !== "").map(unescape);
      if (lines.length) body[param.name] = lines;
    } else if (input.value !== "") {
      body[param.name] = Number(input.value);
    }
  }
  if (!body.logprobs) delete body.top_logprobs; // the API refuses top_logprobs without logprobs
  const type = container.querySelector('[name="response_format.type"]').value;
  if (type === "json_object") body.response_format = { type };
  if (type === "json_schema") {
    const text = container.querySelector('[name="response_format.schema"]').value;
    let schema;
    try {
      schema = JSON.parse(text || "{}");
    } catch (error) {
      throw new Error(`the response_format schema box is not JSON: ${error.message}`);
    }
    body.response_format = { type, json_schema: { name: "playground", schema } };
  }
  return body;
}

function unescape(line) {
  return line.replace(/\\(n|t|\\)/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
}

/** The form built again for new ranges (the schema read with an API key just typed), its values kept. */
export function rebuildForm(container, ranges) {
  const kept = container.cloneNode(true);
  buildForm(container, ranges);
  copyForm(kept, container);
}

/** The same values in another lane's form (Compare starts from the first lane's settings). */
export function copyForm(from, to) {
  for (const input of from.querySelectorAll("[name]")) {
    const twin = to.querySelector(`[name="${input.name}"]`);
    if (input.type === "checkbox") twin.checked = input.checked;
    else twin.value = input.value;
  }
}
