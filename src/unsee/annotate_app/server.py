"""The annotation web app: FastAPI routes over the study database (`db.Store`).

Access: an invite link `/join/<token>` opens a session (an HttpOnly cookie, Secure over HTTPS;
only its hash is stored) for `--invite-days` after the invite. A browser already signed in as
another annotator is asked first, and only a POST carrying that session's CSRF token switches
it, so no other site can make an annotator answer as someone else. Every other route but the
stylesheet needs a session; a revoked annotator gets 403. Writes need the session's CSRF token
(a form field, or the `X-CSRF-Token` header for the JSON API). Images are served by manifest
id only, from a table built at start, so no request names a path. Request bodies over MAX_BODY
are refused before they are read.

Routes
    GET  /join/<token>  -> session cookie, then / (or a page asking to switch)    POST: switch
    GET  /              task page (consent first)      GET/POST /consent
    GET  /img/<id>      an image of the set            GET /ref/<label number>/<k>  a reference image
    GET  /api/task      the current task and progress
    POST /api/answer    {"task": id, "labels": [...], "none": bool} or {"task": id, "order": [ids, most first]}
    POST /api/undo      reopen the last answer (only that one; it stands until resubmitted)
"""

from __future__ import annotations

import hmac
import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from unsee.annotate_app import pages
from unsee.annotate_app.config import ServeConfig
from unsee.annotate_app.db import Store, TaskError, invite_expires, new_tasks
from unsee.errors import UnseeError
from unsee.imageset import ImageSet

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import MutableHeaders
    from starlette.exceptions import HTTPException
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError:  # an optional extra
    raise UnseeError("the annotation app is not installed; install it with `pip install unsee[annotate]`") from None

logger = logging.getLogger(__name__)

COOKIE = "unsee_session"
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
PUBLIC_STATIC = "app.css"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_REFERENCES = 6
MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    # Scripts, styles and images come from this server only; no inline script can run.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass
class Study:
    """Everything the app serves, checked once at start. The database is written by `open_study`, once the
    server listens, so a start that fails (a taken port) leaves a study another server is running untouched."""

    cfg: ServeConfig
    store: Store  # its file is made or resumed by `open_study`
    images: Path  # the image set's folder
    files: dict[str, Path]  # image id -> its file, inside the image set
    references: dict[str, list[Path]]  # label -> example images (rank)
    consent: list[str]  # paragraphs of the consent page
    new_tasks: int  # tasks `open_study` adds
    flagged: int
    url: str
    scores: dict[str, float]  # image id -> detector score, to store at start (only images scored now)
    threshold: float  # score at which an image is flagged


# ---------------------------------------------------------------- start-up
def _image_files(image_set: ImageSet) -> dict[str, Path]:
    root = image_set.folder.resolve()
    files: dict[str, Path] = {}
    for rec in image_set.records:
        path = (root / rec["file"]).resolve()
        if not path.is_relative_to(root):
            raise UnseeError(
                f"{root / 'manifest.jsonl'}: image {rec['id']!r} names a file outside the image set ({rec['file']!r})"
            )
        if not path.is_file():
            raise UnseeError(
                f"image set {str(root)!r} lists {rec['file']!r} (id {rec['id']!r}) but the file is missing"
            )
        files[rec["id"]] = path
    return files


def _references(folder: str, labels: tuple[str, ...]) -> dict[str, list[Path]]:
    root = Path(folder).resolve()
    if not root.is_dir():
        raise UnseeError(f"--references {folder!r} is not a folder of images")

    def inside(p: Path) -> bool:
        # A link out of the folder would serve files nobody chose as examples.
        if p.resolve().is_relative_to(root):
            return True
        logger.warning("--references: skipping %s, which links outside %s", p, root)
        return False

    def images(d: Path) -> list[Path]:
        found = [p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and inside(p)]
        return sorted(p.resolve() for p in found)[:MAX_REFERENCES]

    shared = images(root)
    refs = {
        lb: images(root / lb) if Path(lb).name == lb != ".." and (root / lb).is_dir() and inside(root / lb) else shared
        for lb in labels
    }
    if not any(refs.values()):
        raise UnseeError(
            f"--references {folder!r} has no {'/'.join(IMAGE_SUFFIXES)} images (nor subfolders named after labels)"
        )
    return refs


def _score(
    image_set: ImageSet, todo: set[str], detector: str, labels: tuple[str, ...]
) -> tuple[dict[str, float], float]:
    """({image id: `detector`'s top score over the flag labels} for the images in `todo`, the flag threshold)."""
    from unsee.annotate import score_image_set

    subset = ImageSet(image_set.folder, [r for r in image_set.records if r["id"] in todo], image_set.info)
    scores, info = score_image_set(subset, detector)
    # The study's own labels when the detector reads them, else NudeNet's explicit-nudity score, else any.
    use = [lb for lb in labels if lb in scores] or (["nudity"] if "nudity" in scores else list(scores))
    top = np.stack([scores[lb] for lb in use]).max(0)
    logger.info(
        "%s flags %d of %d images (%s >= %.2f)",
        detector,
        int((top >= info.threshold).sum()),
        len(top),
        "/".join(use),
        info.threshold,
    )
    return dict(zip(subset.ids, top.tolist(), strict=True)), info.threshold


def prepare(cfg: ServeConfig) -> Study:
    """Check the inputs against the stored study and flag images, writing nothing; nothing is served yet."""
    # 1. Check inputs
    image_set = ImageSet.load(cfg.images)
    if not len(image_set):
        raise UnseeError(f"image set {cfg.images!r} has no images")
    files = _image_files(image_set)
    references = _references(cfg.references, cfg.labels) if cfg.references else {}
    if cfg.consent:
        path = Path(cfg.consent)
        if not path.is_file():
            raise UnseeError(
                f"--consent {cfg.consent!r} is not a file; give a text file with your study's consent text"
            )
        consent = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        if not consent:
            raise UnseeError(f"--consent {cfg.consent!r} is empty")
    else:
        consent = pages.default_consent(cfg.labels)
    # 2. Check the stored study, if any: the same image set and labels, and --per-image unless --change-settings
    store = Store.check(cfg.db, image_set.folder, image_set.ids, cfg.labels)
    if store is None:
        new = len(new_tasks(cfg.kind, sorted(image_set.ids), cfg.labels, [], cfg.group_size, cfg.seed))
        stored, flags, detector = {}, {}, None
    else:
        new = store.planned_tasks(cfg.kind, image_set.ids, cfg.per_image, cfg.group_size, cfg.seed, cfg.change_settings)
        stored, flags, detector = store.scores(), store.flagged(), store.meta().get("detector")
    # 3. Score images once per detector; with `none`, earlier flags stay (un-blurring is never silent)
    scores, threshold = {}, 0.0
    if cfg.detector != "none":
        todo = {i for i in image_set.ids if detector != cfg.detector or stored.get(i) is None}
        if todo:
            scores, threshold = _score(image_set, todo, cfg.detector, cfg.labels)
    flagged = sum(scores[i] >= threshold if i in scores else flags.get(i, False) for i in image_set.ids)
    url = cfg.url or f"http://{cfg.host}:{cfg.port}"
    return Study(cfg, Store(cfg.db), image_set.folder, files, references, consent, new, flagged, url, scores, threshold)


def open_study(study: Study) -> None:
    """Make or resume the study database as `prepare` checked it: tasks, `need`, flags, URL and invite lifetime."""
    cfg = study.cfg
    store = Store.create_or_check(cfg.db, study.images, list(study.files), cfg.labels)
    store.add_tasks(cfg.kind, cfg.per_image, cfg.group_size, cfg.seed, change_settings=cfg.change_settings)
    if study.scores:
        store.set_flags(study.scores, study.threshold)
        store.set_meta("detector", cfg.detector)
    store.set_meta("url", study.url)
    store.set_meta("invite_days", str(cfg.invite_days))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the app starts so a taken port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a crash can rebind
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's backlog; listening now means no other server can take the port
    except OSError as e:
        sock.close()
        raise UnseeError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host") from None
    return sock


def run(study: Study, sock: socket.socket) -> None:
    """Write the study (the socket listens, so this start cannot fail on the port any more), then serve until
    interrupted."""
    import uvicorn

    open_study(study)
    config = uvicorn.Config(make_app(study), log_level="warning", access_log=False)  # access logs would hold tokens
    uvicorn.Server(config).run(sockets=[sock])


# ---------------------------------------------------------------- the app
class _SecurityHeaders:
    """Adds SECURITY_HEADERS (and no-store unless a route set its own caching) to every response.

    Outermost, so it also covers what Starlette's own error layer answers (500s)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers[k] = v
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    pass


def _error(path: str, status: int, title: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """JSON for the API, a page for the browser."""
    if path.startswith("/api/"):
        return JSONResponse({"error": message}, status, headers)
    return HTMLResponse(pages.message_page(title, message), status, headers)


def _too_large(path: str) -> Response:
    # Closing the connection spares the server the rest of the body.
    return _error(path, 413, "Too large", f"the request body is over {MAX_BODY} bytes", {"Connection": "close"})


class _LimitBody:
    """Refuses request bodies over MAX_BODY before holding them: by Content-Length before any of it is read, and,
    for a body without one (chunked), as it streams in (the app's read raises BodyTooLarge)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and not (length.isdigit() and int(length) <= MAX_BODY):
            return await _too_large(scope["path"])(scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise BodyTooLarge
            return message

        await self.app(scope, limited, send)


class Denied(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Viewer:
    id: int
    name: str
    csrf: str
    consented: bool


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    task: int = Field(ge=1, le=2**63 - 1)  # SQLite's integer range: a larger id is bad input, not a crash
    labels: list[str] | None = None
    none: bool = False
    order: list[str] | None = None


def _one_line(e: ValidationError | RequestValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in err['loc'] if x != 'body') or 'body'}: {err['msg']}" for err in e.errors()
    )


def _index(text: str, n: int) -> int | None:
    """`text` as an index below `n`, or None (short ASCII digits only: int() refuses very long ones)."""
    return int(text) if text.isascii() and text.isdecimal() and len(text) <= 6 and int(text) < n else None


class _Session:
    """Who is asking (the session cookie), CSRF checks, and the task JSON every API reply carries."""

    def __init__(self, study: Study):
        self.study, self.cfg, self.store = study, study.cfg, study.store

    def viewer(self, request: Request, *, consented: bool = True) -> Viewer:
        secret = request.cookies.get(COOKIE)
        if not secret:
            raise Denied(401, "open your personal invite link to take part")
        row = self.store.session(secret)
        if row is None:
            raise Denied(401, "this browser's session is not known; open your invite link again")
        if row["revoked"]:
            raise Denied(403, "your invite was revoked; ask the study team if this is a mistake")
        if consented and not row["consented"]:
            raise Denied(403, "accept the consent page (/consent) first")
        return Viewer(row["id"], row["name"], row["csrf"], bool(row["consented"]))

    @staticmethod
    def check_csrf(expected: str, got: Any) -> None:
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), expected.encode()):
            raise Denied(403, "missing or wrong CSRF token; reload the page")

    def task_json(self, t: dict[str, Any] | None) -> dict[str, Any] | None:
        if t is None:
            return None
        refs = self.study.references.get(t["concept"], []) if t["kind"] == "rank" else []
        # A label's number, not its name, names its references: a name may hold '/' (or be '..').
        label = self.cfg.labels.index(t["concept"]) if refs else 0
        return {
            "id": t["id"],
            "kind": t["kind"],
            "concept": t["concept"],
            "images": [
                {"id": i, "url": f"/img/{quote(i, safe='')}", "blurred": f}
                for i, f in zip(t["images"], t["flagged"], strict=True)
            ],
            "references": [f"/ref/{label}/{k}" for k in range(len(refs))],
        }

    def reply(self, v: Viewer, task: dict[str, Any] | None, status: int = 200, **extra: Any) -> JSONResponse:
        return JSONResponse(
            {"task": self.task_json(task), "progress": self.store.progress(v.id, self.cfg.kind), **extra}, status
        )

    def https(self, request: Request) -> bool:
        return request.url.scheme == "https" or self.study.url.startswith("https://")

    def invited(self, token: str) -> Any:
        row = self.store.annotator_by_token(token)
        if row is None:
            raise Denied(401, "this invite link is not valid; ask the study team for yours")
        if row["revoked"]:
            raise Denied(403, "this invite link was revoked; ask the study team if this is a mistake")
        return row

    def check_fresh(self, row: Any) -> None:
        until = invite_expires(row["invited"], self.cfg.invite_days)
        if until <= datetime.now(UTC):
            raise Denied(
                403,
                f"this invite link expired on {until:%Y-%m-%d} (links open new sessions for "
                f"{self.cfg.invite_days} days); ask the study team for a new one",
            )

    def signed_in(self, request: Request) -> tuple[str, Any] | None:
        """(cookie, session row) of this browser's usable session, if it has one."""
        secret = request.cookies.get(COOKIE)
        row = self.store.session(secret) if secret else None
        return None if row is None or row["revoked"] else (secret, row)

    def start_session(self, request: Request, annotator: int, replaces: str | None = None) -> Response:
        secret = self.store.open_session(annotator, replaces)
        response = RedirectResponse("/", 303)
        response.set_cookie(
            COOKIE, secret, max_age=60 * 86400, httponly=True, samesite="lax", secure=self.https(request)
        )
        return response


def _add_error_handlers(app: FastAPI) -> None:
    """Each failure as a one-line JSON error (the API) or an error page."""

    @app.exception_handler(Denied)
    async def denied(request: Request, e: Denied) -> Response:
        return _error(request.url.path, e.status, "Not allowed" if e.status == 403 else "Invite link needed", e.message)

    @app.exception_handler(TaskError)
    async def task_error(request: Request, e: TaskError) -> Response:
        return JSONResponse({"error": e.message}, e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> Response:
        return JSONResponse({"error": _one_line(e)}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:
        return _error(request.url.path, e.status_code, "Not found" if e.status_code == 404 else "Error", str(e.detail))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, e: BodyTooLarge) -> Response:
        return _too_large(request.url.path)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception) -> Response:  # logged by uvicorn; the client learns nothing of it
        return _error(
            request.url.path,
            500,
            "Server error",
            "the server failed on this request; try again, and tell the study team if it keeps happening",
        )


def _add_join_routes(app: FastAPI, study: Study, sess: _Session) -> None:
    """Invite links: a session per annotator, a switch only by a POST with the current session's token."""
    cfg = study.cfg

    @app.get("/join/{token}")
    async def join(token: str, request: Request) -> Response:
        def go() -> Response:
            row = sess.invited(token)
            current = sess.signed_in(request)
            if current and current[1]["id"] == row["id"]:
                return RedirectResponse("/", 303)  # the same person again: this browser's session carries on
            sess.check_fresh(row)
            if current:  # another annotator is signed in here: only a POST from this page switches
                until = invite_expires(row["invited"], cfg.invite_days)
                return HTMLResponse(pages.join_page(current[1]["name"], row["name"], token, current[1]["csrf"], until))
            return sess.start_session(request, row["id"])

        return await run_in_threadpool(go)

    @app.post("/join/{token}")
    async def join_confirmed(token: str, request: Request) -> Response:
        form = await request.form()

        def go() -> Response:
            row = sess.invited(token)
            current = sess.signed_in(request)
            if current is None:  # cross-site posts come without the cookie; nothing to confirm a switch from
                raise Denied(403, "this browser has no session to switch from; open the invite link again")
            if current[1]["id"] == row["id"]:
                return RedirectResponse("/", 303)
            sess.check_csrf(current[1]["csrf"], form.get("csrf"))
            sess.check_fresh(row)
            return sess.start_session(request, row["id"], replaces=current[0])

        return await run_in_threadpool(go)


def _add_pages(app: FastAPI, study: Study, sess: _Session) -> None:
    """The task page, consent, static files, images and reference images (all behind a session)."""
    cfg, store = study.cfg, study.store

    @app.get("/")
    async def index(request: Request) -> Response:
        v = await run_in_threadpool(sess.viewer, request, consented=False)
        if not v.consented:
            return RedirectResponse("/consent", 303)
        return HTMLResponse(pages.task_page(v.name, cfg.kind, cfg.labels, v.csrf))

    @app.get("/consent")
    async def consent_form(request: Request) -> Response:
        v = await run_in_threadpool(sess.viewer, request, consented=False)
        return HTMLResponse(pages.consent_page(v.name, study.consent, v.csrf))

    @app.post("/consent")
    async def consent(request: Request) -> Response:
        v = await run_in_threadpool(sess.viewer, request, consented=False)
        form = await request.form()
        sess.check_csrf(v.csrf, form.get("csrf"))
        if form.get("agree") != "yes":
            return HTMLResponse(pages.message_page("Consent needed", "Tick the box to agree, or close this tab."), 422)
        await run_in_threadpool(store.consent, v.id)
        return RedirectResponse("/", 303)

    @app.get("/declined")
    async def declined(request: Request) -> Response:
        await run_in_threadpool(sess.viewer, request, consented=False)
        return HTMLResponse(pages.message_page("Thank you", "Nothing was recorded. You can close this tab."))

    @app.get("/static/{name}")
    async def static(name: str, request: Request) -> Response:
        if name != PUBLIC_STATIC:  # the stylesheet is public: error pages, seen without a session, use it
            await run_in_threadpool(sess.viewer, request, consented=False)
        if name not in STATIC_FILES:
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    @app.get("/img/{image_id}")
    async def image(image_id: str, request: Request) -> Response:
        await run_in_threadpool(sess.viewer, request)
        path = study.files.get(image_id)  # ids only: a request never names a path
        if path is None:
            raise HTTPException(404, "no such image")
        return FileResponse(path, headers={"Cache-Control": "private, no-store"})

    @app.get("/ref/{label}/{k}")
    async def reference(label: str, k: str, request: Request) -> Response:
        await run_in_threadpool(sess.viewer, request)  # before parsing: without a session, every route says 401
        i = _index(label, len(cfg.labels))
        refs = study.references.get(cfg.labels[i], []) if i is not None else []
        j = _index(k, len(refs))
        if j is None:
            raise HTTPException(404, "no such reference image")
        return FileResponse(refs[j], headers={"Cache-Control": "private, no-store"})


def _add_api(app: FastAPI, study: Study, sess: _Session) -> None:
    """The JSON API: the next task, an answer, an undo."""
    cfg, store = study.cfg, study.store

    @app.get("/api/task")
    async def get_task(request: Request) -> Response:
        v = await run_in_threadpool(sess.viewer, request)
        return await run_in_threadpool(lambda: sess.reply(v, store.next_task(v.id, cfg.kind, cfg.lease)))

    @app.post("/api/answer")
    async def post_answer(request: Request) -> Response:
        # Order of checks: who (401/403), CSRF (403), then the body (413, 422).
        v = await run_in_threadpool(sess.viewer, request)
        sess.check_csrf(v.csrf, request.headers.get("x-csrf-token"))
        body = await request.body()
        try:
            a = Answer.model_validate_json(body)
        except ValidationError as e:
            raise TaskError(422, _one_line(e)) from None

        def answer() -> Response:
            try:
                nxt = store.answer(v.id, cfg.kind, a.task, labels=a.labels, none=a.none, order=a.order, lease=cfg.lease)
            except TaskError as e:
                if not e.moved_on:
                    raise
                return sess.reply(v, e.task, e.status, error=e.message)
            return sess.reply(v, nxt)

        return await run_in_threadpool(answer)

    @app.post("/api/undo")
    async def post_undo(request: Request) -> Response:
        v = await run_in_threadpool(sess.viewer, request)
        sess.check_csrf(v.csrf, request.headers.get("x-csrf-token"))

        def undo() -> Response:
            task, previous = store.undo(v.id, cfg.kind)
            return sess.reply(v, task, previous=previous)

        return await run_in_threadpool(undo)


def make_app(study: Study) -> ASGIApp:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    sess = _Session(study)
    _add_error_handlers(app)
    _add_join_routes(app, study, sess)
    _add_pages(app, study, sess)
    _add_api(app, study, sess)
    return _SecurityHeaders(_LimitBody(app))
