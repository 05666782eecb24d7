// A lane's conversation as code: the messages array, a curl command and a Python `openai` call that send
// the same request (not streamed). The API key never goes into a snippet: they read TURNOUT_API_KEY.

import { OPENAI_FIELDS } from "./params.js";

export function messagesJson(request) {
  return JSON.stringify(request.messages, null, 2);
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

export function curl(request, baseUrl, withKey) {
  const lines = [`curl ${baseUrl}/v1/chat/completions`, "-H 'Content-Type: application/json'"];
  if (withKey) lines.push('-H "Authorization: Bearer $TURNOUT_API_KEY"');
  lines.push(`-d ${shellQuote(JSON.stringify(request, null, 2))}`);
  return lines.join(" \\\n  ");
}

/** A JSON value written as a Python literal on one line. */
function pyInline(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pyInline).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyInline(v)}`).join(", ")}}`;
}

/** A JSON value written as a Python literal: on one line when it is short, else one item a line. */
function py(value, indent = "") {
  const inner = indent + "    ";
  const line = pyInline(value);
  if (typeof value !== "object" || value === null || indent.length + line.length <= 76) return line;
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => inner + py(v, inner)).join(",\n")},\n${indent}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${py(v, inner)}`).join(",\n")},\n${indent}}`;
}

export function python(request, baseUrl, withKey) {
  const args = [];
  const extra = {};
  for (const [name, value] of Object.entries(request)) {
    if (name === "model" || name === "messages" || OPENAI_FIELDS.has(name)) {
      args.push(`    ${name}=${py(value, "    ")},`);
    } else {
      extra[name] = value;
    }
  }
  if (Object.keys(extra).length) args.push(`    extra_body=${py(extra, "    ")},  # vLLM's names`);
  const key = withKey ? 'os.environ["TURNOUT_API_KEY"]' : '"unused"';
  return [
    ...(withKey ? ["import os", ""] : []),
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(baseUrl + "/v1")}, api_key=${key})`,
    "response = client.chat.completions.create(",
    ...args,
    ")",
    "print(response.choices[0].message.content)",
  ].join("\n");
}
