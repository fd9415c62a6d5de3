// Building the page: find an element by id, make one with attributes and children. Text is
// always set as text (`textContent`), never parsed as HTML, so a name cannot inject markup.
"use strict";

export const $ = (id) => document.getElementById(id);

export const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-") || k.startsWith("aria-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const kid of kids) e.append(kid);
  return e;
};
