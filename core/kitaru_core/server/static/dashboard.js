// kitaru-adapters dashboard: live regions over server-sent events, answer forms, buttons.
// Plain JavaScript, no dependencies. Every region marked `data-live` is re-rendered by the
// server when the store changes; a region with `data-live-key` is replaced only when its key
// changes, so a form somebody is filling in is not reset by unrelated updates.
"use strict";

(function () {
  const HEADERS = { "X-Kitaru-Dashboard": "1" };
  let refreshing = null;
  let refreshAgain = false;

  function setLive(state, text) {
    const indicator = document.getElementById("live-indicator");
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.textContent = text;
  }

  async function refresh() {
    if (refreshing) { refreshAgain = true; return refreshing; }
    refreshing = (async () => {
      try {
        const response = await fetch(window.location.href, {
          headers: { "X-Kitaru-Fragment": "1" }, credentials: "same-origin", cache: "no-store",
        });
        if (!response.ok) return;
        const html = await response.text();
        const incoming = new DOMParser().parseFromString("<div>" + html + "</div>", "text/html");
        for (const fresh of incoming.querySelectorAll("[data-live]")) {
          const current = document.getElementById(fresh.id);
          if (!current) continue;
          if (fresh.hasAttribute("data-live-key") && current.dataset.liveKey === fresh.dataset.liveKey) continue;
          current.replaceWith(document.importNode(fresh, true));
        }
        const count = document.getElementById("pending-count");
        const meta = incoming.querySelector("#fragment-meta");
        if (count && meta) {
          count.textContent = meta.dataset.pending;
          count.hidden = meta.dataset.pending === "0";
        }
        document.body.dataset.refreshed = String(Date.now());
      } finally {
        refreshing = null;
        if (refreshAgain) { refreshAgain = false; refresh(); }
      }
    })();
    return refreshing;
  }

  function listen() {
    const url = document.body.dataset.events;
    if (!url || !window.EventSource) { setLive("off", ""); return; }
    const source = new EventSource(url);
    let first = true;
    source.addEventListener("open", () => setLive("on", "live"));
    source.addEventListener("error", () => setLive("off", "reconnecting…"));
    source.addEventListener("change", () => {
      setLive("on", "live");
      if (first) { first = false; return; }  // the first event describes what the page already shows
      refresh();
    });
  }

  // A headline, then one line per problem (validation errors) if there are any.
  function show(target, text, kind, problems) {
    if (!target) return;
    target.textContent = text;
    target.className = "result " + (kind || "");
    if (problems && problems.length) {
      const list = document.createElement("ul");
      for (const line of problems) { const item = document.createElement("li"); item.textContent = line; list.appendChild(item); }
      target.appendChild(list);
    }
  }

  // `context` "replay": a refused answer is a replay's wait override, so the API's message says it all.
  async function explain(response, context) {
    let body = null;
    try { body = await response.json(); } catch (error) { /* not JSON */ }
    if (response.status === 401 || (response.status === 403 && body && body.error !== "cross_site_request")) {
      return { text: "Sign in with the server's token to do this.", problems: [] };
    }
    if (body && Array.isArray(body.detail)) {  // FastAPI's own request validation
      return { text: "The request was refused.", problems: body.detail.map((d) => (d.loc || []).join(".") + ": " + d.msg) };
    }
    if (body && body.error === "InvalidAnswerError" && context !== "replay") {  // the message repeats the problems: list them once
      return { text: "Answer refused; the wait stays pending:", problems: body.problems };
    }
    return { text: (body && body.message) || ("HTTP " + response.status), problems: (body && body.problems) || [] };
  }

  function readField(input) {
    const raw = input.value;
    const type = input.dataset.type;
    const required = input.dataset.required === "true";
    if (raw === "" && type !== "string") {
      if (!required) return { skip: true };
      return { error: (input.dataset.field || "answer") + ": a value is required" };
    }
    if (raw === "" && type === "string" && !required) return { skip: true };
    if (type === "boolean") return { value: raw === "true" };
    if (type === "integer" || type === "number") {
      const number = Number(raw);
      if (Number.isNaN(number)) return { error: (input.dataset.field || "answer") + ": not a number" };
      return { value: number };
    }
    if (type === "json") {
      try { return { value: JSON.parse(raw) }; }
      catch (error) { return { error: (input.dataset.field || "answer") + ": not valid JSON (" + error.message + ")" }; }
    }
    return { value: raw };
  }

  function answerValue(form, submitter) {
    const kind = form.dataset.kind;
    if (kind === "approval") {
      const message = form.querySelector("[data-field=message]").value.trim();
      return { value: { approved: submitter && submitter.value === "approve", message: message || null } };
    }
    const inputs = form.querySelectorAll("[data-field]");
    if (kind === "value" || kind === "json") return readField(inputs[0]);
    const value = {};
    for (const input of inputs) {
      const read = readField(input);
      if (read.error) return read;
      if (!read.skip) value[input.dataset.field] = read.value;
    }
    return { value: value };
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form.answer");
    if (!form) return;
    event.preventDefault();
    const result = form.querySelector(".result");
    const read = answerValue(form, event.submitter);
    if (read.error) { show(result, "Not sent:", "problems", [read.error]); return; }
    const resume = form.querySelector("input[name=resume]");
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    try {
      const response = await fetch(form.dataset.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { ...HEADERS, "Content-Type": "application/json" },
        body: JSON.stringify({
          value: read.value, resume: Boolean(resume && resume.checked), question_digest: form.dataset.digest || null,
        }),
      });
      if (response.ok) {
        const body = await response.json();
        let text = "Answered.";
        if (body.resumed && body.resumed.queued_for_worker) text += " Handed to a worker to resume.";
        else if (body.resumed) text += " Resuming in the background (process " + body.resumed.pid + ").";
        else if (body.resume_skipped) text += " " + body.resume_skipped;
        show(result, text, "ok");
        form.closest(".wait") && form.closest(".wait").classList.add("done");
        refresh();
      } else {
        const why = await explain(response);
        show(result, why.text, "problems", why.problems);
      }
    } catch (error) {
      show(result, "The server did not answer: " + error.message, "problems");
    } finally {
      for (const button of form.querySelectorAll("button")) button.disabled = false;
    }
  });

  document.addEventListener("click", async (event) => {
    const poster = event.target.closest("button[data-post]");
    if (poster) {
      if (poster.dataset.confirm && !window.confirm(poster.dataset.confirm)) return;
      const result = poster.parentElement.querySelector(".result");
      poster.disabled = true;
      try {
        const response = await fetch(poster.dataset.post, { method: "POST", credentials: "same-origin", headers: HEADERS });
        if (response.ok) {
          const body = await response.json();
          show(result, body.queued_for_worker ? "Handed to a worker to resume." : body.pid ? "Resuming in the background (process " + body.pid + ")." : "Done: " + (body.status || "ok") + ".", "ok");
          refresh();
        } else {
          const why = await explain(response);
          show(result, why.text, "problems", why.problems);
        }
      } finally {
        poster.disabled = false;
      }
      return;
    }
    const loader = event.target.closest("button[data-output]");
    if (loader) {
      loader.disabled = true;
      const response = await fetch(loader.dataset.output, { credentials: "same-origin" });
      const block = document.createElement("pre");
      block.className = "full-output";
      if (response.ok) block.textContent = JSON.stringify((await response.json()).value, null, 2);
      else block.textContent = (await explain(response)).text;
      loader.replaceWith(block);
    }
  });

  // "Replay from here" (execution page): an editor dialog, then the compare view of both executions.
  // What an override of the chosen call means depends on its kind: a plain call's output, an adapter's
  // model response (text and/or tool calls) or tool result (plain JSON); other adapter calls take none.
  const TOOL_KINDS = ["tool", "mcp"];
  const MODEL_RESPONSE_TEMPLATE = '{"text": "", "tool_calls": []}';
  const REFERENCE_CHARACTERS = 20000;  // of a stored model response shown beside its override

  function overrideKind(kind) {
    if (kind === "user") return "user";
    if (kind === "model") return "model";
    return TOOL_KINDS.includes(kind) ? "tool" : null;
  }

  async function storedOutput(form, opener) {
    const url = form.dataset.output + encodeURIComponent(opener.dataset.replaySequence) + "/output";
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.ok) return { json: true, value: (await response.json()).value };
      return { json: false, why: (await explain(response)).text };
    } catch (error) {
      return { json: false, why: "The server did not answer: " + error.message };
    }
  }

  // The answered waits reached before the chosen call (their answers are kept by the replay), each
  // with its answer in a field: a changed answer is sent as an override by wait name.
  function listWaitAnswers(form, opener) {
    const list = form.querySelector(".wait-answer-list");
    list.replaceChildren();
    const started = Number(opener.dataset.replayStarted);
    const source = document.getElementById("replay-wait-answers");
    const waits = source ? Array.from(source.children).filter((item) => Number(item.dataset.created) < started) : [];
    for (const wait of waits) {
      const label = document.createElement("label");
      const title = document.createElement("span");
      const name = document.createElement("code");
      name.textContent = wait.dataset.name;
      title.append("wait ", name, " " + wait.dataset.question);
      if (wait.dataset.answer === undefined) {  // too large to send with the page: kept as it is
        const kept = document.createElement("span");
        kept.className = "hint";
        kept.textContent = "its answer (" + wait.dataset.answerCharacters + " characters) is too large to change here; it is kept";
        label.append(title, kept);
        list.appendChild(label);
        continue;
      }
      const field = document.createElement("textarea");
      field.className = "json wait-answer";
      field.rows = Math.min(8, Math.max(2, wait.dataset.answer.split("\n").length));
      field.dataset.wait = wait.dataset.name;
      field.dataset.original = wait.dataset.answer;
      field.value = wait.dataset.answer;
      label.append(title, field);
      list.appendChild(label);
    }
    form.querySelector(".wait-answers").hidden = waits.length === 0;
  }

  async function openReplayEditor(opener, dialog) {
    const form = dialog.querySelector("form.replay");
    const key = opener.dataset.replayKey;
    dialog.showModal();
    if (form.dataset.key === key) return;  // the same call again: keep what was typed
    form.dataset.key = key;
    form.querySelector(".replay-key").textContent = key;
    const kind = overrideKind(opener.dataset.replayKind);
    const output = form.elements.namedItem("output");
    const overrideOutput = form.elements.namedItem("override_output");
    overrideOutput.checked = false;
    overrideOutput.disabled = kind === null;
    output.disabled = kind === null;
    output.value = kind === "model" ? MODEL_RESPONSE_TEMPLATE : "";
    for (const line of form.querySelectorAll(".override-meaning")) line.hidden = line.dataset.meaning !== kind;
    const note = form.querySelector(".adapter-note");
    note.hidden = kind !== null;
    note.querySelector(".adapter-kind").textContent = opener.dataset.replayKind;
    const reference = form.querySelector(".stored-output");
    const referenceText = reference.querySelector(".stored-output-text");
    reference.hidden = kind !== "model";
    referenceText.textContent = "";
    show(form.querySelector(".result"), "", "");
    listWaitAnswers(form, opener);
    if (kind === null) return;
    const stored = await storedOutput(form, opener);
    if (form.dataset.key !== key) return;  // another call was chosen meanwhile
    if (kind === "model") {
      // the server has no framework installed: the response is shown as stored, for reference
      let text;
      if (stored.json) text = JSON.stringify(stored.value, null, 2);
      else {  // not JSON: the timeline's preview of it, and why no more is shown
        const row = opener.closest("tr");
        const cell = row && row.querySelector("td.call-output > code");
        text = (cell ? cell.textContent : "") + "\n(" + stored.why + ")";
      }
      if (text.length > REFERENCE_CHARACTERS) text = text.slice(0, REFERENCE_CHARACTERS) + "… (" + text.length + " characters)";
      referenceText.textContent = text;
    } else if (output.value === "") {  // a tool result that is not JSON starts as `null`
      output.value = stored.json ? JSON.stringify(stored.value, null, 2) : kind === "tool" ? "null" : "";
    }
  }

  function readJson(text, what, problems) {
    try { return JSON.parse(text); }
    catch (error) { problems.push(what + ": not valid JSON (" + error.message + ")"); return undefined; }
  }

  document.addEventListener("click", (event) => {
    const dialog = document.getElementById("replay-editor");
    if (!dialog) return;
    const opener = event.target.closest("button[data-replay-key]");
    if (opener) { openReplayEditor(opener, dialog); return; }
    if (event.target.closest("#replay-editor button.close")) dialog.close();
  });

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form.replay");
    if (!form) return;
    event.preventDefault();
    const result = form.querySelector(".result");
    const fields = form.elements;
    const body = { from_call: form.dataset.key, run: fields.namedItem("run").value === "now" };
    const problems = [];
    const overrides = {};
    if (fields.namedItem("override_output").checked) {
      const value = readJson(fields.namedItem("output").value, "output", problems);
      if (value !== undefined) overrides[form.dataset.key] = value;
    }
    for (const field of form.querySelectorAll("textarea.wait-answer")) {
      if (field.value === field.dataset.original) continue;
      const answer = readJson(field.value, "wait " + field.dataset.wait, problems);
      if (answer === undefined) continue;
      if (JSON.stringify(answer) !== JSON.stringify(JSON.parse(field.dataset.original))) overrides[field.dataset.wait] = answer;
    }
    if (Object.keys(overrides).length) body.overrides = overrides;
    if (fields.namedItem("override_inputs").checked) {
      const inputs = readJson(fields.namedItem("inputs").value, "inputs", problems);
      if (inputs !== undefined && (inputs === null || typeof inputs !== "object" || Array.isArray(inputs))) {
        problems.push("inputs: a JSON object by parameter name is needed");
      } else if (inputs !== undefined) body.inputs = inputs;
    }
    if (problems.length) { show(result, "Not sent:", "problems", problems); return; }
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    try {
      const response = await fetch(form.dataset.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { ...HEADERS, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (response.ok) {
        const started = await response.json();
        show(result, "Replay " + started.execution_id + " " + started.status + "; opening the comparison…", "ok");
        window.location.assign("/compare?" + new URLSearchParams({ a: started.replay_of, b: started.execution_id }).toString());
      } else {
        const why = await explain(response, "replay");
        show(result, why.text, "problems", why.problems);
      }
    } catch (error) {
      show(result, "The server did not answer: " + error.message, "problems");
    } finally {
      for (const button of form.querySelectorAll("button")) button.disabled = false;
    }
  });

  document.addEventListener("DOMContentLoaded", listen);
})();
