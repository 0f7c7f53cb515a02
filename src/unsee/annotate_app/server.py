"""The annotation web app: FastAPI routes over the study database (`db.Store`).

Access: an invite link `/join/<token>` opens a session (an HttpOnly cookie; only its hash is
stored). Every other route needs that session; a revoked annotator gets 403. Writes need the
session's CSRF token (a form field, or the `X-CSRF-Token` header for the JSON API). Images are
served by manifest id only, from a table built at start, so no request names a path.

Routes
    GET  /join/<token>  -> session cookie, then /
    GET  /              task page (consent first)      GET/POST /consent
    GET  /img/<id>      an image of the set            GET /ref/<label>/<k>  a reference image
    GET  /api/task      the current task and progress
    POST /api/answer    {"task": id, "labels": [...], "none": bool} or {"task": id, "order": [ids, most first]}
    POST /api/undo      take back the last answer
"""

from __future__ import annotations

import hmac
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from unsee.annotate_app import pages
from unsee.annotate_app.config import ServeConfig
from unsee.annotate_app.db import Store, TaskError
from unsee.errors import UnseeError
from unsee.imageset import ImageSet

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
    from pydantic import BaseModel, ConfigDict, ValidationError
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
    """Everything the app serves, checked once at start."""

    cfg: ServeConfig
    store: Store
    files: dict[str, Path]  # image id -> its file, inside the image set
    references: dict[str, list[Path]]  # label -> example images (rank)
    consent: list[str]  # paragraphs of the consent page
    new_tasks: int
    flagged: int
    url: str


# ---------------------------------------------------------------- start-up
def _image_files(image_set: ImageSet) -> dict[str, Path]:
    root = image_set.folder.resolve()
    files: dict[str, Path] = {}
    for rec in image_set.records:
        path = (root / rec["file"]).resolve()
        if not path.is_relative_to(root):
            raise UnseeError(f"{root / 'manifest.jsonl'}: image {rec['id']!r} names a file outside the image set ({rec['file']!r})")
        if not path.is_file():
            raise UnseeError(f"image set {str(root)!r} lists {rec['file']!r} (id {rec['id']!r}) but the file is missing")
        files[rec["id"]] = path
    return files


def _references(folder: str, labels: tuple[str, ...]) -> dict[str, list[Path]]:
    root = Path(folder)
    if not root.is_dir():
        raise UnseeError(f"--references {folder!r} is not a folder of images")

    def images(d: Path) -> list[Path]:
        return sorted(p.resolve() for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)[:MAX_REFERENCES]

    shared = images(root)
    refs = {lb: images(root / lb) if (root / lb).is_dir() and Path(lb).name == lb else shared for lb in labels}
    if not any(refs.values()):
        raise UnseeError(f"--references {folder!r} has no {'/'.join(IMAGE_SUFFIXES)} images (nor subfolders named after labels)")
    return refs


def _flag_images(store: Store, image_set: ImageSet, detector: str, labels: tuple[str, ...]) -> None:
    """Score the images not yet scored by `detector` and store whether each is flagged."""
    from unsee.annotate import score_image_set

    if store.meta().get("detector") != detector:
        store.reset_scores()
    todo = set(store.unscored())
    if not todo:
        return
    subset = ImageSet(image_set.folder, [r for r in image_set.records if r["id"] in todo], image_set.info)
    scores, info = score_image_set(subset, detector)
    # The study's own labels when the detector reads them, else NudeNet's explicit-nudity score, else any.
    use = [lb for lb in labels if lb in scores] or (["nudity"] if "nudity" in scores else list(scores))
    top = np.stack([scores[lb] for lb in use]).max(0)
    store.set_flags(dict(zip(subset.ids, top.tolist(), strict=True)), info.threshold)
    store.set_meta("detector", detector)
    logger.info("%s flagged %d of %d images (%s >= %.2f)", detector, int((top >= info.threshold).sum()), len(top),
                "/".join(use), info.threshold)


def prepare(cfg: ServeConfig) -> Study:
    """Check the inputs, make or resume the study database, flag images; nothing is served yet."""
    # 1. Check inputs
    image_set = ImageSet.load(cfg.images)
    if not len(image_set):
        raise UnseeError(f"image set {cfg.images!r} has no images")
    files = _image_files(image_set)
    references = _references(cfg.references, cfg.labels) if cfg.references else {}
    if cfg.consent:
        path = Path(cfg.consent)
        if not path.is_file():
            raise UnseeError(f"--consent {cfg.consent!r} is not a file; give a text file with your study's consent text")
        consent = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        if not consent:
            raise UnseeError(f"--consent {cfg.consent!r} is empty")
    else:
        consent = pages.default_consent(cfg.labels)
    # 2. Make or resume the study (refused when the db was made for another image set or labels)
    store = Store.create_or_check(cfg.db, image_set.folder, image_set.ids, cfg.labels)
    new = store.add_tasks(cfg.kind, cfg.per_image, cfg.group_size, cfg.seed)
    # 3. Flag images once per detector; with `none`, earlier flags stay (un-blurring is never silent)
    if cfg.detector != "none":
        _flag_images(store, image_set, cfg.detector, cfg.labels)
    url = f"http://{cfg.host}:{cfg.port}"
    store.set_meta("url", url)
    flagged = sum(store.flagged().values())
    return Study(cfg, store, files, references, consent, new, flagged, url)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the app starts so a taken port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a crash can rebind
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UnseeError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host") from None
    return sock


def run(study: Study, sock: socket.socket) -> None:
    """Serve until interrupted."""
    import uvicorn

    config = uvicorn.Config(make_app(study), log_level="warning", access_log=False)  # access logs would hold tokens
    uvicorn.Server(config).run(sockets=[sock])


# ---------------------------------------------------------------- the app
class _SecurityHeaders:
    """Adds SECURITY_HEADERS (and no-store unless a route set its own caching) to every response."""

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
    task: int
    labels: list[str] | None = None
    none: bool = False
    order: list[str] | None = None


def _one_line(e: ValidationError | RequestValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc'] if x != 'body') or 'body'}: {err['msg']}" for err in e.errors())


def make_app(study: Study) -> FastAPI:
    cfg, store = study.cfg, study.store
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def viewer(request: Request, *, consented: bool = True) -> Viewer:
        secret = request.cookies.get(COOKIE)
        if not secret:
            raise Denied(401, "open your personal invite link to take part")
        row = store.session(secret)
        if row is None:
            raise Denied(401, "this browser's session is not known; open your invite link again")
        if row["revoked"]:
            raise Denied(403, "your invite was revoked; ask the study team if this is a mistake")
        if consented and not row["consented"]:
            raise Denied(403, "accept the consent page (/consent) first")
        return Viewer(row["id"], row["name"], row["csrf"], bool(row["consented"]))

    def check_csrf(v: Viewer, got: str | None) -> None:
        if not got or not hmac.compare_digest(got.encode(), v.csrf.encode()):
            raise Denied(403, "missing or wrong CSRF token; reload the page")

    def task_json(t: dict[str, Any] | None) -> dict[str, Any] | None:
        if t is None:
            return None
        refs = study.references.get(t["concept"], []) if t["kind"] == "rank" else []
        return {"id": t["id"], "kind": t["kind"], "concept": t["concept"],
                "images": [{"id": i, "url": f"/img/{quote(i, safe='')}", "blurred": f}
                           for i, f in zip(t["images"], t["flagged"], strict=True)],
                "references": [f"/ref/{quote(t['concept'], safe='')}/{k}" for k in range(len(refs))]}

    def reply(v: Viewer, task: dict[str, Any] | None, **extra: Any) -> JSONResponse:
        return JSONResponse({"task": task_json(task), "progress": store.progress(v.id, cfg.kind), **extra})

    # -------------------------------------------------------- errors and headers
    @app.exception_handler(Denied)
    async def denied(request: Request, e: Denied) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": e.message}, e.status)
        return HTMLResponse(pages.message_page("Not allowed" if e.status == 403 else "Invite link needed", e.message), e.status)

    @app.exception_handler(TaskError)
    async def task_error(request: Request, e: TaskError) -> Response:
        return JSONResponse({"error": e.message}, e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> Response:
        return JSONResponse({"error": _one_line(e)}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:
        return JSONResponse({"error": str(e.detail)}, e.status_code)

    app.add_middleware(_SecurityHeaders)

    # -------------------------------------------------------- pages
    @app.get("/join/{token}")
    async def join(token: str) -> Response:
        row = await run_in_threadpool(store.annotator_by_token, token)
        if row is None:
            raise Denied(401, "this invite link is not valid; ask the study team for yours")
        if row["revoked"]:
            raise Denied(403, "this invite link was revoked; ask the study team if this is a mistake")
        secret = await run_in_threadpool(store.open_session, row["id"])
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, secret, max_age=60 * 86400, httponly=True, samesite="lax")
        return response

    @app.get("/")
    async def index(request: Request) -> Response:
        v = await run_in_threadpool(viewer, request, consented=False)
        if not v.consented:
            return RedirectResponse("/consent", 303)
        return HTMLResponse(pages.task_page(v.name, cfg.kind, cfg.labels, v.csrf))

    @app.get("/consent")
    async def consent_form(request: Request) -> Response:
        v = await run_in_threadpool(viewer, request, consented=False)
        return HTMLResponse(pages.consent_page(v.name, study.consent, v.csrf))

    @app.post("/consent")
    async def consent(request: Request) -> Response:
        v = await run_in_threadpool(viewer, request, consented=False)
        form = await request.form()
        csrf = form.get("csrf")
        check_csrf(v, csrf if isinstance(csrf, str) else None)
        if form.get("agree") != "yes":
            return HTMLResponse(pages.message_page("Consent needed", "Tick the box to agree, or close this tab."), 422)
        await run_in_threadpool(store.consent, v.id)
        return RedirectResponse("/", 303)

    @app.get("/declined")
    async def declined(request: Request) -> Response:
        await run_in_threadpool(viewer, request, consented=False)
        return HTMLResponse(pages.message_page("Thank you", "Nothing was recorded. You can close this tab."))

    @app.get("/static/{name}")
    async def static(name: str, request: Request) -> Response:
        await run_in_threadpool(viewer, request, consented=False)
        if name not in STATIC_FILES:
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    @app.get("/img/{image_id}")
    async def image(image_id: str, request: Request) -> Response:
        await run_in_threadpool(viewer, request)
        path = study.files.get(image_id)  # ids only: a request never names a path
        if path is None:
            raise HTTPException(404, "no such image")
        return FileResponse(path, headers={"Cache-Control": "private, no-store"})

    @app.get("/ref/{label}/{k}")
    async def reference(label: str, k: str, request: Request) -> Response:
        await run_in_threadpool(viewer, request)  # before parsing k: without a session, every route says 401
        refs = study.references.get(label, [])
        if not (k.isdecimal() and int(k) < len(refs)):
            raise HTTPException(404, "no such reference image")
        return FileResponse(refs[int(k)], headers={"Cache-Control": "private, no-store"})

    # -------------------------------------------------------- the JSON API
    @app.get("/api/task")
    async def get_task(request: Request) -> Response:
        v = await run_in_threadpool(viewer, request)
        return await run_in_threadpool(lambda: reply(v, store.next_task(v.id, cfg.kind, cfg.lease)))

    @app.post("/api/answer")
    async def post_answer(request: Request) -> Response:
        # Order of checks: who (401/403), CSRF (403), then the body (422).
        v = await run_in_threadpool(viewer, request)
        check_csrf(v, request.headers.get("x-csrf-token"))
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"body over {MAX_BODY} bytes")
        try:
            a = Answer.model_validate_json(body)
        except ValidationError as e:
            raise TaskError(422, _one_line(e)) from None
        return await run_in_threadpool(lambda: reply(v, store.answer(v.id, cfg.kind, a.task, labels=a.labels,
                                                                      none=a.none, order=a.order, lease=cfg.lease)))

    @app.post("/api/undo")
    async def post_undo(request: Request) -> Response:
        v = await run_in_threadpool(viewer, request)
        check_csrf(v, request.headers.get("x-csrf-token"))

        def undo() -> Response:
            task, previous = store.undo(v.id, cfg.kind, cfg.lease)
            return reply(v, task, previous=previous)

        return await run_in_threadpool(undo)

    return app
