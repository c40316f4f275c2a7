// ==UserScript==
// @name         chatbridge for LMArena
// @namespace    chatbridge
// @version      1.0.0
// @description  Serves an OpenAI-compatible API (chatbridge: nginx + sidecar) from this LMArena tab, with your own session.
// @match        https://lmarena.ai/*
// @match        https://*.lmarena.ai/*
// @match        https://arena.ai/*
// @match        https://*.arena.ai/*
// @run-at       document-end
// @grant        none
// @noframes
// ==/UserScript==
