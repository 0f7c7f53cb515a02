// The task page: fetch a task, let the annotator answer by mouse or keyboard, post it, repeat.
// Plain DOM code; every text from the server goes through textContent, never innerHTML.
"use strict";

(() => {
  const body = document.body;
  const kind = body.dataset.kind;
  const csrf = body.dataset.csrf;
  const labels = JSON.parse(body.dataset.labels);
  const main = document.getElementById("task");
  const message = document.getElementById("message");
  const bar = document.getElementById("bar");
  const progressText = document.getElementById("progress-text");

  let task = null;
  let checked = new Set(); // binary: labels checked
  let none = false; // binary: "none of these" chosen
  let order = []; // rank: image ids, most first
  let revealed = new Set(); // flagged images the annotator chose to see (kept across re-renders)
  let busy = false;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  async function api(method, url, data) {
    const opts = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (data !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(data);
    }
    const r = await fetch(url, opts);
    let j = {};
    try { j = await r.json(); } catch (e) { /* not JSON: keep the status */ }
    if (!r.ok) {
      const err = new Error(j.error || `${r.status} ${r.statusText}`);
      err.status = r.status;
      err.body = j;
      throw err;
    }
    return j;
  }

  function say(text, isError = false) {
    message.textContent = text;
    message.className = isError ? "error" : "";
  }

  function showProgress(p) {
    bar.max = Math.max(p.total, 1);
    bar.value = p.done;
    progressText.textContent = `you: ${p.mine} answered · everyone: ${p.done} of ${p.total}`;
  }

  function show(j) {
    task = j.task;
    checked = new Set();
    none = false;
    order = [];
    revealed = new Set();
    const prev = j.previous;
    if (prev && prev.labels) { checked = new Set(prev.labels); none = prev.labels.length === 0; }
    if (prev && prev.order) order = prev.order.slice();
    showProgress(j.progress);
    render();
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
  }

  function picture(im, onclick) {
    const blurred = im.blurred && !revealed.has(im.url);
    const img = el("img", { src: im.url, alt: `image ${im.id}`, "data-id": im.id, class: blurred ? "blurred" : "" });
    const fig = el("figure", { class: "image", "data-id": im.id, "data-url": im.url }, img);
    if (blurred) {
      const reveal = el("button", { type: "button", class: "reveal", text: "Flagged: click to show" });
      reveal.addEventListener("click", (ev) => { ev.stopPropagation(); unblur(fig); });
      fig.append(reveal);
    }
    fig.addEventListener("click", () => {
      if (img.classList.contains("blurred")) unblur(fig);
      else if (onclick) onclick();
    });
    return fig;
  }

  function unblur(fig) {
    revealed.add(fig.dataset.url);
    fig.querySelectorAll("img.blurred").forEach((i) => i.classList.remove("blurred"));
    fig.querySelectorAll("button.reveal").forEach((b) => b.remove());
  }

  function render() {
    main.replaceChildren();
    if (!task) {
      main.append(el("p", { class: "done", text: "All done: there is nothing left for you to judge. Thank you!" }),
                  buttons(false));
      return;
    }
    if (task.kind === "binary") renderBinary();
    else renderRank();
  }

  function buttons(canSubmit = true) {
    const row = el("p", { class: "buttons" });
    if (canSubmit) row.append(el("button", { type: "button", id: "submit", onclick: submit }, "Submit ", el("kbd", { text: "Enter" })));
    row.append(" ", el("button", { type: "button", id: "undo", onclick: undo }, "Undo ", el("kbd", { text: "u" })));
    return row;
  }

  function renderBinary() {
    const im = task.images[0];
    const fig = picture(im, null);
    const box = el("fieldset", { class: "labels" }, el("legend", { text: "Which of these does the image show?" }));
    labels.forEach((name, i) => {
      const input = el("input", { type: "checkbox", "data-label": name, id: `label-${i}` });
      input.checked = checked.has(name);
      input.addEventListener("change", () => toggle(name, input.checked));
      const key = i < 9 ? el("kbd", { text: String(i + 1) }) : "";
      box.append(el("label", { for: `label-${i}` }, input, " ", key, " ", el("span", { text: name })));
    });
    const noneButton = el("button", { type: "button", id: "none", class: none ? "chosen" : "", onclick: chooseNone },
                          el("kbd", { text: "0" }), " None of these");
    box.append(noneButton);
    main.append(el("div", { class: "binary" }, fig, box), buttons());
  }

  function toggle(name, on) {
    if (on) { checked.add(name); none = false; } else checked.delete(name);
    syncBinary();
  }

  function chooseNone() {
    none = !none;
    if (none) checked.clear();
    syncBinary();
  }

  function syncBinary() {
    main.querySelectorAll("input[data-label]").forEach((i) => { i.checked = checked.has(i.dataset.label); });
    const b = document.getElementById("none");
    if (b) b.className = none ? "chosen" : "";
  }

  function renderRank() {
    main.append(el("p", { class: "question" }, "Order these images by how strongly they show ",
                   el("strong", { text: task.concept }), ": click them (or press their number) from MOST to LEAST."));
    const group = el("div", { class: "group" });
    task.images.forEach((im, i) => {
      const fig = picture(im, () => pick(im.id));
      fig.prepend(el("span", { class: "key", text: String(i + 1) }));
      const place = order.indexOf(im.id);
      fig.append(el("span", { class: "place", text: place >= 0 ? `#${place + 1}` : "" }));
      if (place >= 0) fig.classList.add("ranked");
      group.append(fig);
    });
    const row = el("div", { class: "rank" }, group);
    if (task.references.length) {
      const refs = el("aside", { class: "references" }, el("h2", { text: `Examples of ${task.concept}` }));
      task.references.forEach((url, k) => refs.append(picture({ id: `reference ${k + 1}`, url, blurred: true }, null)));
      row.append(refs);
    }
    main.append(row, el("p", { class: "order", text: order.length ? `Your order: ${order.map((id) => task.images.findIndex((x) => x.id === id) + 1).join(" > ")}` : "" }));
    const b = buttons();
    b.prepend(el("button", { type: "button", id: "clear", onclick: takeBack }, "Take back ", el("kbd", { text: "Backspace" })), " ");
    main.append(b);
  }

  function pick(id) {
    if (order.includes(id)) { order = order.slice(0, order.indexOf(id)); render(); return; }
    order.push(id);
    if (order.length === task.images.length - 1) order.push(task.images.find((x) => !order.includes(x.id)).id); // the last is implied
    render();
  }

  function takeBack() {
    order.pop();
    render();
  }

  async function submit() {
    if (busy || !task) return;
    let data;
    if (task.kind === "binary") {
      if (!none && checked.size === 0) { say("Check the labels that apply, or choose None of these.", true); return; }
      data = { task: task.id, labels: [...checked], none };
    } else {
      if (order.length !== task.images.length) { say("Put every image in order first.", true); return; }
      data = { task: task.id, order };
    }
    busy = true;
    try {
      show(await api("POST", "/api/answer", data));
      say("Saved.");
    } catch (e) {
      if (e.status === 409 && "task" in e.body) show(e.body); // the hold ran out: the reply carries the next task
      else if (e.status === 409) await load(); // answered elsewhere: fetch the current task
      say(e.message, true);
    } finally { busy = false; }
  }

  async function undo() {
    if (busy) return;
    busy = true;
    try {
      show(await api("POST", "/api/undo"));
      say("Your last answer is open again: change it and submit. Until you do, it stands as it was.");
    } catch (e) { say(e.message, true); } finally { busy = false; }
  }

  async function load() {
    try { show(await api("GET", "/api/task")); } catch (e) { say(e.message, true); }
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    if (k === "Enter") { ev.preventDefault(); submit(); return; }
    if (k === "u" || k === "U") { ev.preventDefault(); undo(); return; }
    if (!task) return;
    if (k === "r" || k === "R") { main.querySelectorAll("figure").forEach(unblur); return; }
    if (task.kind === "binary") {
      if (k === "0" || k === "n" || k === "N") { ev.preventDefault(); chooseNone(); return; }
      const i = Number(k) - 1;
      if (/^[1-9]$/.test(k) && i < labels.length) { ev.preventDefault(); toggle(labels[i], !checked.has(labels[i])); }
    } else {
      if (k === "Backspace" || k === "Delete") { ev.preventDefault(); takeBack(); return; }
      const i = Number(k) - 1;
      if (/^[1-9]$/.test(k) && i < task.images.length) { ev.preventDefault(); pick(task.images[i].id); }
    }
  });

  load();
})();
