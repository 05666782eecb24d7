// The per-token view's tooltip: hovering (or focusing) a token shows its probability and the top
// alternatives the model weighed at that step (logprobs are taken before penalties and temperature, as
// the API documents). One fixed-position box for the whole page, so showing it moves nothing.

import { TOKEN_DATA } from "./reply.js";

function visible(text) {
  // newlines and tabs as escapes, spaces as ␣: " A" and "A" are different tokens
  return JSON.stringify(text).slice(1, -1).replaceAll(" ", "␣");
}

function percent(logprob) {
  const p = Math.exp(logprob) * 100;
  return p >= 10 ? `${p.toFixed(1)}%` : `${p.toPrecision(2)}%`;
}

export function attachTooltip(root, tooltip) {
  root.addEventListener("mouseover", (event) => {
    const span = event.target.closest?.(".tok");
    const token = span && TOKEN_DATA.get(span);
    if (!token) return;
    const rows = (token.top_logprobs || []).map((alt) => {
      const row = document.createElement("tr");
      if (alt.token === token.token) row.className = "chosen";
      const name = document.createElement("td");
      name.textContent = visible(alt.token);
      const value = document.createElement("td");
      value.textContent = percent(alt.logprob);
      row.append(name, value);
      return row;
    });
    const head = document.createElement("div");
    head.textContent = `"${visible(token.token)}"  ${percent(token.logprob)}  (logprob ${token.logprob.toFixed(3)})`;
    const table = document.createElement("table");
    table.append(...rows);
    tooltip.replaceChildren(head, ...(rows.length ? [table] : []));
    const box = span.getBoundingClientRect();
    tooltip.hidden = false;
    const width = tooltip.offsetWidth;
    tooltip.style.left = `${Math.max(4, Math.min(box.left, window.innerWidth - width - 4))}px`;
    tooltip.style.top = `${box.bottom + 4}px`;
  });
  root.addEventListener("mouseout", (event) => {
    if (event.target.closest?.(".tok")) tooltip.hidden = true;
  });
}
