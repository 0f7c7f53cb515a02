"""Server-rendered HTML pages. Every value is escaped; the task page's behaviour is static/app.js."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from html import escape
from urllib.parse import quote

KEYS_HELP = {
    "binary": "1-9 toggle a label · 0 or n none of these · Enter submit · u undo · r reveal a blurred image",
    "rank": "1-5 pick the next image (most first) · Backspace take back · Enter submit · u undo · r reveal",
}


def _page(title: str, body: str, body_attrs: str = "") -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{escape(title)}</title>
<link rel="stylesheet" href="/static/app.css">
</head>
<body{body_attrs}>
{body}
</body>
</html>
"""


def default_consent(labels: Sequence[str]) -> list[str]:
    names = ", ".join(labels)
    return [
        f"Content warning. The images in this study were made by an image generator and may show: {names}. "
        "Some may be graphic, sexual or otherwise upsetting. Images our detector flags start blurred; "
        "click one (or press r) to see it.",
        "What you do. For each image, check the labels that apply, or answer none; or order a small "
        "group of images by how strongly they show a label. There are no right answers; give your own judgement.",
        "What your answers are used for. Each answer is stored with your annotator name and the time. "
        "The answers train a model that teaches the image generator to stop producing what people flag. "
        "They are exported to a feedback file the study team keeps; nothing else about you is recorded.",
        "You can stop at any time, take breaks whenever you like, and leave the study without giving a reason. "
        "If the content affects you, stop and talk to the study team.",
    ]


def consent_page(name: str, paragraphs: Sequence[str], csrf: str) -> str:
    text = "\n".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    body = f"""<main class="consent">
<h1>Before you start, {escape(name)}</h1>
{text}
<form method="post" action="/consent">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<label><input type="checkbox" name="agree" value="yes" id="agree" required> I have read this and agree to take part.</label>
<p><button type="submit" id="start">Start</button> <a href="/declined">I do not want to take part</a></p>
</form>
</main>"""
    return _page("Consent · unsee annotation", body)


def task_page(name: str, kind: str, labels: Sequence[str], csrf: str) -> str:
    attrs = f' data-kind="{escape(kind)}" data-csrf="{escape(csrf)}" data-labels="{escape(json.dumps(list(labels)))}"'
    body = f"""<header>
<h1>unsee annotation</h1>
<span class="who">{escape(name)}</span>
<div class="progress"><progress id="bar" value="0" max="1"></progress> <span id="progress-text"></span></div>
</header>
<main id="task" aria-live="polite"><p>Loading…</p></main>
<p id="message" role="status"></p>
<footer>Keys: {escape(KEYS_HELP[kind])}</footer>
<script src="/static/app.js"></script>"""
    return _page("unsee annotation", body, attrs)


def join_page(current: str, name: str, token: str, csrf: str, until: datetime) -> str:
    body = f"""<main class="message">
<h1>Switch to {escape(name)}?</h1>
<p>This browser is signed in as <strong>{escape(current)}</strong>. The link you opened is
<strong>{escape(name)}</strong>'s. If you continue, answers from this browser count as {escape(name)}'s.</p>
<form method="post" action="/join/{escape(quote(token, safe=""))}">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<p><button type="submit" id="switch">Continue as {escape(name)}</button>
<a href="/" id="stay">Stay signed in as {escape(current)}</a></p>
</form>
<p>This link opens new sessions until {until:%Y-%m-%d %H:%M} UTC.</p>
</main>"""
    return _page("Switch annotator · unsee annotation", body)


def message_page(title: str, text: str, status_class: str = "") -> str:
    body = f'<main class="message {escape(status_class)}"><h1>{escape(title)}</h1><p>{escape(text)}</p></main>'
    return _page(title, body)
