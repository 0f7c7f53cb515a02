"""The study database: one SQLite file (WAL mode) with the image set, annotators, tasks and answers.

Tables
- meta: what the db was made for (image set path, labels) and the last detector / URL / invite
  lifetime used.
- images: the manifest's ids, each with the detector's flag (flagged images start blurred).
- annotators: name and sha256 of the invite token (the token itself is never stored).
- sessions: browsers opened from an invite link: sha256 of the cookie and a per-session CSRF
  token; at most MAX_SESSIONS per annotator.
- tasks: binary = one image; rank = a group of 2-5 images and the concept to order by.
  Each task is judged by `need` annotators.
- assignments: one row per (task, annotator), UNIQUE, so nobody judges a task twice. A row
  without an answer is a lease: the task is held for that annotator until `leased_until`,
  and counts toward `need`, so concurrent annotators are never handed the same slot.
  `reopened` marks the one answer an annotator took back with undo: it stays in the
  export until they submit its replacement, so undo never shortens the study.

Every write that hands out or records work is one `BEGIN IMMEDIATE` transaction (the write
lock is taken up front), so threads of one server, or several servers on one file, never
interleave. An answer is committed before the HTTP reply, so a crash loses nothing answered.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from unsee.errors import UnseeError
from unsee.feedback import Binary, Feedback, Judgement, Rank, now, save_feedback
from unsee.files import ensure_writable_dir

SCHEMA_VERSION = 2
Kind = Literal["binary", "rank"]
MAX_SESSIONS = 5  # browsers per annotator; opening the link in one more signs out the oldest
INVITE_DAYS = 14  # invite lifetime until a server states its own (`serve --invite-days`)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    flagged INTEGER NOT NULL DEFAULT 0,
    score REAL                               -- the detector's top score over the flag labels; NULL: not scored
);
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    invited TEXT NOT NULL,
    revoked TEXT,
    consented TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY,
    annotator INTEGER NOT NULL REFERENCES annotators(id),
    csrf TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('binary', 'rank')),
    concept TEXT,
    images TEXT NOT NULL,                    -- JSON list of image ids
    need INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    id INTEGER PRIMARY KEY,
    task INTEGER NOT NULL REFERENCES tasks(id),
    annotator INTEGER NOT NULL REFERENCES annotators(id),
    leased_until REAL,                       -- unix time; only while unanswered
    answer TEXT,                             -- JSON: {"labels": [...]} or {"order": [...]}
    answered TEXT,                           -- ISO time of the answer
    seq INTEGER UNIQUE,                      -- order of answers across the study
    reopened INTEGER NOT NULL DEFAULT 0,     -- 1: taken back by undo; the answer stands until replaced
    UNIQUE (task, annotator)
);
CREATE INDEX IF NOT EXISTS assignments_by_annotator ON assignments (annotator, seq);
"""


class TaskError(Exception):
    """A request the study cannot take; `status` is the HTTP status the server answers with.

    `moved_on`: the annotator was handed `task` (their next one, or None when nothing is left) instead.
    """

    def __init__(self, status: int, message: str, *, moved_on: bool = False, task: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.moved_on = moved_on
        self.task = task


def hash_secret(secret: str) -> str:
    # Tokens are 256 random bits, so a plain (unsalted) hash cannot be brute-forced.
    return hashlib.sha256(secret.encode()).hexdigest()


def invite_expires(invited: str, days: int) -> datetime:
    """When a link invited at `invited` (an ISO time) stops opening new sessions."""
    return datetime.fromisoformat(invited) + timedelta(days=days)


def rank_groups(ids: Sequence[str], size: int, rng: random.Random) -> list[list[str]]:
    """Shuffle `ids` into groups of about `size` (sizes differ by at most one; none has fewer than 2)."""
    order = list(ids)
    rng.shuffle(order)
    n = len(order)
    if n < 2:
        return []
    g = min(-(-n // size), n // 2)
    return [order[i * n // g : (i + 1) * n // g] for i in range(g)]


def new_tasks(
    kind: Kind,
    ids: Sequence[str],
    labels: Sequence[str],
    have: Sequence[tuple[str | None, list[str]]],
    group_size: int,
    seed: int,
) -> list[tuple[str | None, list[str]]]:
    """(concept, images) of the tasks `kind` still lacks, given the study's images `ids` (sorted) and the
    (concept, images) of the tasks it `have`s: one per image (binary), or groups per label (rank)."""
    rng = random.Random(seed)
    if kind == "binary":
        done = {images[0] for _, images in have}
        new = [i for i in ids if i not in done]
        rng.shuffle(new)  # a random order, so annotators do not all start on the manifest's first prompt
        return [(None, [i]) for i in new]
    if len(ids) < 2:
        raise UnseeError(f"rank tasks need at least 2 images; the image set has {len(ids)}")
    rows: list[tuple[str | None, list[str]]] = []
    for concept in labels:
        done = {i for c, images in have if c == concept for i in images}
        rows += [(concept, g) for g in rank_groups([i for i in ids if i not in done], group_size, rng)]
    rng.shuffle(rows)
    return rows


class Store:
    """The study database. Each thread gets its own connection, so one Store serves a server's thread pool."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()

    # ------------------------------------------------------------ connections
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # Kept open: closing the last connection of a WAL database checkpoints it, which would cost every request.
        con = getattr(self._local, "con", None)
        try:
            if con is None:
                con = sqlite3.connect(self.path, timeout=60, isolation_level=None)  # we issue BEGIN ourselves
                con.row_factory = sqlite3.Row
                con.execute("PRAGMA foreign_keys=ON")
                con.execute("PRAGMA synchronous=FULL")  # fsync each commit: an acknowledged answer survives a crash
                self._local.con = con
            yield con
        except sqlite3.DatabaseError as e:
            if "not a database" in str(e) or "malformed" in str(e):
                raise UnseeError(f"{str(self.path)!r} is not an unsee annotation database ({e})") from None
            raise

    def close(self) -> None:
        """Close this thread's connection (others close when their thread or the Store goes away)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _meta(self, con: sqlite3.Connection) -> dict[str, str]:
        return {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path) -> Store:
        """An existing study database (for invite, revoke, status, export)."""
        store = cls(path)
        if not store.path.is_file():
            raise UnseeError(
                f"annotation database {str(path)!r} does not exist; start a study with "
                f"`unsee annotate serve --images SET --db {path} --labels ...`"
            )
        with store._connect() as con:
            has_meta = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if not has_meta or "schema" not in store._meta(con):
                raise UnseeError(f"{str(path)!r} is not an unsee annotation database (no study in it)")
        return store

    @classmethod
    def check(cls, path: str | Path, images: str | Path, ids: Sequence[str], labels: Sequence[str]) -> Store | None:
        """Check, writing nothing, that `path` can hold the study of image set `images` (its manifest `ids`) and
        `labels`: the Store of the existing study, or None when the study is still to be made."""
        path = Path(path)
        if path.exists() and not path.is_file():
            raise UnseeError(f"--db {str(path)!r} is a folder; give a file name such as {str(path / 'feedback.db')!r}")
        ensure_writable_dir(path.parent, "database folder")
        if not path.exists():
            return None
        store = cls(path)
        with store._connect() as con:
            if not store._tables(con):
                return None
            store._check(
                con, str(Path(images).resolve()), ids, labels, {r["id"] for r in con.execute("SELECT id FROM images")}
            )
        return store

    def _tables(self, con: sqlite3.Connection) -> set[str]:
        tables = {r["name"] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise UnseeError(f"{str(self.path)!r} is a database of something else; give a new file for --db")
        return tables

    def _check(
        self, con: sqlite3.Connection, images: str, ids: Sequence[str], labels: Sequence[str], known: set[str]
    ) -> None:
        meta = self._meta(con)
        if not meta:
            return
        if meta.get("images") != images:
            raise UnseeError(
                f"database {str(self.path)!r} was made for image set {meta.get('images')!r}, not {images!r}; "
                "use another --db for a new image set"
            )
        old = tuple(json.loads(meta.get("labels", "[]")))
        if old != tuple(labels):
            raise UnseeError(
                f"database {str(self.path)!r} was made for labels {','.join(old)!r}, got {','.join(labels)!r}; "
                "changing labels mid-study would mix judgements of different questions, so use another --db"
            )
        gone = sorted(known - set(ids))
        if gone:
            raise UnseeError(
                f"image set {images!r} no longer has {len(gone)} image(s) the study uses "
                f"(e.g. {gone[0]!r}); was it regenerated? use another --db"
            )

    @classmethod
    def create_or_check(cls, path: str | Path, images: str | Path, ids: Sequence[str], labels: Sequence[str]) -> Store:
        """Make the study for image set `images` (its manifest `ids`) and `labels`, or check an existing one matches."""
        cls.check(path, images, ids, labels)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        images = str(Path(images).resolve())
        with store._connect() as con:
            store._tables(con)
            con.execute("PRAGMA journal_mode=WAL")  # persistent; readers never block the writer
            con.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        with store._write() as con:
            if "reopened" not in {r["name"] for r in con.execute("PRAGMA table_info(assignments)")}:  # a schema-1 study
                con.execute("ALTER TABLE assignments ADD COLUMN reopened INTEGER NOT NULL DEFAULT 0")
                con.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
            meta = store._meta(con)
            known = {r["id"] for r in con.execute("SELECT id FROM images")}
            store._check(con, images, ids, labels, known)  # again, inside the write lock
            if not meta:
                con.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ("schema", str(SCHEMA_VERSION)),
                        ("images", images),
                        ("labels", json.dumps(list(labels))),
                        ("created", now()),
                    ],
                )
            con.executemany("INSERT INTO images (id) VALUES (?)", [(i,) for i in ids if i not in known])
        return store

    # ------------------------------------------------------------ study settings
    def meta(self) -> dict[str, Any]:
        with self._connect() as con:
            m = self._meta(con)
        return {**m, "labels": tuple(json.loads(m.get("labels", "[]")))}

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _have(self, con: sqlite3.Connection, kind: Kind) -> list[tuple[str | None, list[str]]]:
        return [
            (r["concept"], json.loads(r["images"]))
            for r in con.execute("SELECT concept, images FROM tasks WHERE kind=?", (kind,))
        ]

    def _check_need(self, con: sqlite3.Connection, kind: Kind, per_image: int) -> None:
        needs = sorted(r[0] for r in con.execute("SELECT DISTINCT need FROM tasks WHERE kind=?", (kind,)))
        if needs and needs != [per_image]:
            raise UnseeError(
                f"study {str(self.path)!r} asks for {'/'.join(map(str, needs))} annotator(s) per image on its "
                f"{kind} tasks, not --per-image {per_image}; give --per-image {needs[-1]}, or add "
                "--change-settings to change it (a server already running on this study sees the change too)"
            )

    def planned_tasks(
        self,
        kind: Kind,
        ids: Sequence[str],
        per_image: int,
        group_size: int = 5,
        seed: int = 0,
        change_settings: bool = False,
    ) -> int:
        """How many tasks `add_tasks` would add, writing nothing; refuses another `per_image` like it."""
        with self._connect() as con:
            if not change_settings:
                self._check_need(con, kind, per_image)
            labels = json.loads(self._meta(con)["labels"])
            return len(new_tasks(kind, sorted(ids), labels, self._have(con, kind), group_size, seed))

    def add_tasks(
        self, kind: Kind, per_image: int, group_size: int = 5, seed: int = 0, change_settings: bool = False
    ) -> int:
        """Tasks for every image (binary) or every image x label (rank) not yet in one; returns how many were new.

        `need` of all tasks of `kind` becomes `per_image`; without `change_settings` a study whose tasks
        need another number is refused.
        """
        with self._write() as con:
            if not change_settings:
                self._check_need(con, kind, per_image)
            ids = [r["id"] for r in con.execute("SELECT id FROM images ORDER BY id")]
            labels = json.loads(self._meta(con)["labels"])
            rows = new_tasks(kind, ids, labels, self._have(con, kind), group_size, seed)
            con.executemany(
                "INSERT INTO tasks (kind, concept, images, need) VALUES (?, ?, ?, ?)",
                [(kind, concept, json.dumps(images), per_image) for concept, images in rows],
            )
            con.execute("UPDATE tasks SET need=? WHERE kind=?", (per_image, kind))
        return len(rows)

    def scores(self) -> dict[str, float | None]:
        """Each image's stored detector score (None: not scored)."""
        with self._connect() as con:
            return {r["id"]: r["score"] for r in con.execute("SELECT id, score FROM images")}

    def set_flags(self, scores: dict[str, float], threshold: float) -> None:
        """Store each image's detector score and whether it reaches `threshold` (then it starts blurred)."""
        with self._write() as con:
            con.executemany(
                "UPDATE images SET score=?, flagged=? WHERE id=?",
                [(float(s), int(s >= threshold), i) for i, s in scores.items()],
            )

    def flagged(self) -> dict[str, bool]:
        with self._connect() as con:
            return {r["id"]: bool(r["flagged"]) for r in con.execute("SELECT id, flagged FROM images")}

    # ------------------------------------------------------------ annotators
    def invite_days(self) -> int:
        """Days an invite link opens new sessions (what the server last started with)."""
        return int(self.meta().get("invite_days", INVITE_DAYS))

    def invite(self, name: str) -> str:
        """A new invite token for `name` (a revoked annotator, or one whose link expired, gets a new token);
        returns the token."""
        name = name.strip()
        if not name or len(name) > 64 or not name.isprintable():
            raise UnseeError(f"--name must be 1-64 printable characters, got {name!r}")
        token = secrets.token_urlsafe(32)
        days = self.invite_days()
        with self._write() as con:
            row = con.execute("SELECT id, revoked, invited FROM annotators WHERE name=?", (name,)).fetchone()
            if row is None:
                con.execute(
                    "INSERT INTO annotators (name, token_hash, invited) VALUES (?, ?, ?)",
                    (name, hash_secret(token), now()),
                )
            elif row["revoked"] is None and invite_expires(row["invited"], days) > datetime.now(UTC):
                raise UnseeError(
                    f"annotator {name!r} already has a link (it opens sessions until "
                    f"{invite_expires(row['invited'], days):%Y-%m-%d %H:%M} UTC); to issue a new one, first "
                    f"`unsee annotate revoke --db {self.path} --name {name}`"
                )
            elif row["revoked"] is None:  # expired: a new link; the browsers it opened stay signed in
                con.execute(
                    "UPDATE annotators SET token_hash=?, invited=? WHERE id=?", (hash_secret(token), now(), row["id"])
                )
            else:
                con.execute("DELETE FROM sessions WHERE annotator=?", (row["id"],))  # old browsers stay out
                con.execute(
                    "UPDATE annotators SET token_hash=?, revoked=NULL, invited=? WHERE id=?",
                    (hash_secret(token), now(), row["id"]),
                )
        return token

    def revoke(self, name: str) -> None:
        """Stop `name`'s link and sessions; their answers are kept, their held tasks go back to the pool."""
        with self._write() as con:
            row = con.execute("SELECT id, revoked FROM annotators WHERE name=?", (name,)).fetchone()
            if row is None:
                names = [r["name"] for r in con.execute("SELECT name FROM annotators ORDER BY name")]
                raise UnseeError(
                    f"no annotator {name!r} in {str(self.path)!r}; annotators: {', '.join(names) or 'none yet'}"
                )
            if row["revoked"] is None:
                con.execute("UPDATE annotators SET revoked=? WHERE id=?", (now(), row["id"]))
            con.execute("DELETE FROM assignments WHERE annotator=? AND answer IS NULL", (row["id"],))

    def annotator_by_token(self, token: str) -> sqlite3.Row | None:
        with self._connect() as con:
            return con.execute("SELECT * FROM annotators WHERE token_hash=?", (hash_secret(token),)).fetchone()

    def open_session(self, annotator: int, replaces: str | None = None) -> str:
        """A new browser session for `annotator` (ending the session `replaces`, the browser's previous one);
        returns the cookie value (only its hash is stored). The oldest beyond MAX_SESSIONS are signed out."""
        secret = secrets.token_urlsafe(32)
        with self._write() as con:
            if replaces:
                con.execute("DELETE FROM sessions WHERE hash=?", (hash_secret(replaces),))
            con.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?)",
                (hash_secret(secret), annotator, secrets.token_urlsafe(32), now()),
            )
            con.execute(
                "DELETE FROM sessions WHERE annotator=? AND rowid NOT IN "
                "(SELECT rowid FROM sessions WHERE annotator=? ORDER BY rowid DESC LIMIT ?)",
                (annotator, annotator, MAX_SESSIONS),
            )
        return secret

    def session(self, secret: str) -> sqlite3.Row | None:
        """(annotator id, name, revoked, consented, csrf) of a session cookie, or None."""
        with self._connect() as con:
            return con.execute(
                "SELECT a.id, a.name, a.revoked, a.consented, s.csrf FROM sessions s "
                "JOIN annotators a ON a.id = s.annotator WHERE s.hash=?",
                (hash_secret(secret),),
            ).fetchone()

    def consent(self, annotator: int) -> None:
        with self._write() as con:
            con.execute("UPDATE annotators SET consented=COALESCE(consented, ?) WHERE id=?", (now(), annotator))

    # ------------------------------------------------------------ tasks and answers
    def _task(self, con: sqlite3.Connection, task_id: int) -> dict[str, Any] | None:
        r = con.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
        if r is None:
            return None
        images = json.loads(r["images"])
        flags = {
            x["id"]: bool(x["flagged"])
            for x in con.execute(f"SELECT id, flagged FROM images WHERE id IN ({','.join('?' * len(images))})", images)
        }
        return {
            "id": r["id"],
            "kind": r["kind"],
            "concept": r["concept"],
            "images": images,
            "flagged": [flags.get(i, False) for i in images],
            "need": r["need"],
        }

    def _next(self, con: sqlite3.Connection, annotator: int, kind: Kind, lease: float) -> dict[str, Any] | None:
        """The task held for `annotator`, else a new lease on the open task closest to done."""
        t = time.time()
        con.execute("DELETE FROM assignments WHERE answer IS NULL AND leased_until < ?", (t,))
        held = con.execute(
            "SELECT a.id, a.task, a.reopened FROM assignments a JOIN tasks t ON t.id = a.task "
            "WHERE a.annotator=? AND (a.answer IS NULL OR a.reopened) AND t.kind=? ORDER BY a.reopened DESC, a.id LIMIT 1",
            (annotator, kind),
        ).fetchone()
        if held is not None:
            if not held["reopened"]:  # a reopened answer already counts; it needs no hold
                con.execute("UPDATE assignments SET leased_until=? WHERE id=?", (t + lease, held["id"]))
            return self._task(con, held["task"])
        # Closest to done first: judged images accumulate their `need` judgements early, so
        # agreement can be measured from the first day.
        row = con.execute(
            "SELECT t.id FROM tasks t LEFT JOIN (SELECT task, COUNT(*) AS n FROM assignments GROUP BY task) c "
            "ON c.task = t.id WHERE t.kind=? AND COALESCE(c.n, 0) < t.need AND NOT EXISTS "
            "(SELECT 1 FROM assignments m WHERE m.task = t.id AND m.annotator = ?) "
            "ORDER BY COALESCE(c.n, 0) DESC, t.id LIMIT 1",
            (kind, annotator),
        ).fetchone()
        if row is None:
            return None
        con.execute(
            "INSERT INTO assignments (task, annotator, leased_until) VALUES (?, ?, ?)",
            (row["id"], annotator, t + lease),
        )
        return self._task(con, row["id"])

    def next_task(self, annotator: int, kind: Kind, lease: float) -> dict[str, Any] | None:
        """The annotator's current task (leased for `lease` seconds), or None when nothing is left for them."""
        with self._write() as con:
            return self._next(con, annotator, kind, lease)

    def _check_answer(
        self,
        task: dict[str, Any],
        labels: list[str] | None,
        none: bool,
        order: list[str] | None,
        allowed: Sequence[str],
    ) -> dict[str, Any]:
        if task["kind"] == "binary":
            if labels is None or order is not None:
                raise TaskError(422, "a binary answer has 'labels' (a list, [] with 'none': true) and no 'order'")
            unknown = sorted(set(labels) - set(allowed))
            if unknown:
                raise TaskError(422, f"unknown label(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
            if len(set(labels)) != len(labels):
                raise TaskError(422, "a label is checked twice")
            if none == bool(labels):
                raise TaskError(422, "check at least one label, or answer 'none' (and then no label)")
            return {"labels": sorted(labels)}
        if order is None or labels is not None or none:
            raise TaskError(422, "a rank answer has 'order' (the group's image ids, most to least) and no 'labels'")
        if len(set(order)) != len(order):
            raise TaskError(422, "an image is ranked twice; ties are refused, give each image its own place")
        if sorted(order) != sorted(task["images"]):
            raise TaskError(422, f"'order' must list exactly this group's images {', '.join(task['images'])}")
        return {"order": list(order)}

    def answer(
        self,
        annotator: int,
        kind: Kind,
        task_id: int,
        *,
        labels: list[str] | None = None,
        none: bool = False,
        order: list[str] | None = None,
        lease: float = 900,
    ) -> dict[str, Any] | None:
        """Record an answer (replacing a reopened one) and hand out the next task, in one transaction; returns the
        next task or None. When the annotator's hold ran out and the place was taken, the TaskError carries the
        task they were handed instead."""
        with self._write() as con:
            task = self._task(con, task_id)
            if task is None or task["kind"] != kind:
                raise TaskError(404, f"no {kind} task {task_id}")
            answer = self._check_answer(task, labels, none, order, json.loads(self._meta(con)["labels"]))
            row = con.execute(
                "SELECT id, answer, reopened FROM assignments WHERE task=? AND annotator=?", (task_id, annotator)
            ).fetchone()
            if row is not None and row["answer"] is not None and not row["reopened"]:
                raise TaskError(409, "you already answered this task")
            if row is None:  # the lease ran out; the answer still counts if nobody took the place since
                taken = con.execute("SELECT COUNT(*) FROM assignments WHERE task=?", (task_id,)).fetchone()[0]
                if taken < task["need"]:
                    row = {
                        "id": con.execute(
                            "INSERT INTO assignments (task, annotator) VALUES (?, ?)", (task_id, annotator)
                        ).lastrowid
                    }
            if row is not None:
                seq = con.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM assignments").fetchone()[0]
                con.execute(
                    "UPDATE assignments SET answer=?, answered=?, seq=?, leased_until=NULL, reopened=0 WHERE id=?",
                    (json.dumps(answer), now(), seq, row["id"]),
                )
                return self._next(con, annotator, kind, lease)
            instead = self._next(con, annotator, kind, lease)  # committed with the refusal, so the reply can carry it
        raise TaskError(
            409,
            "your hold on this task ran out and it went to someone else; "
            + ("here is a new one" if instead else "nothing else is left for you"),
            moved_on=True,
            task=instead,
        )

    def undo(self, annotator: int, kind: Kind) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reopen the annotator's last answer: its task becomes current again, and the answer stands (in progress and
        export) until they submit its replacement. Only the last answer can be reopened, and one at a time.
        Returns (task, the standing answer)."""
        with self._write() as con:
            last = con.execute(
                "SELECT a.id, a.task, a.answer, a.reopened FROM assignments a JOIN tasks t ON t.id = a.task "
                "WHERE a.annotator=? AND t.kind=? AND a.answer IS NOT NULL ORDER BY a.reopened DESC, a.seq DESC LIMIT 1",
                (annotator, kind),
            ).fetchone()
            if last is None:
                raise TaskError(409, "nothing to undo")
            if last["reopened"]:
                raise TaskError(
                    409,
                    "only your last answer can be taken back, and it is open now: "
                    "change it and submit (until then it stands as it was)",
                )
            con.execute(
                "DELETE FROM assignments WHERE annotator=? AND answer IS NULL AND task IN "
                "(SELECT id FROM tasks WHERE kind=?)",
                (annotator, kind),
            )
            con.execute("UPDATE assignments SET reopened=1 WHERE id=?", (last["id"],))
            task = self._task(con, last["task"])
            assert task is not None  # a foreign key keeps it
            return task, json.loads(last["answer"])

    def progress(self, annotator: int | None, kind: Kind) -> dict[str, int]:
        """mine: answers of `annotator`; done/total: judgements given / wanted over all tasks of `kind`."""
        with self._connect() as con:
            total, done = con.execute(
                "SELECT COALESCE(SUM(t.need), 0), COALESCE(SUM(MIN(t.need, COALESCE(c.n, 0))), 0) FROM tasks t "
                "LEFT JOIN (SELECT task, COUNT(*) AS n FROM assignments WHERE answer IS NOT NULL GROUP BY task) c "
                "ON c.task = t.id WHERE t.kind=?",
                (kind,),
            ).fetchone()
            mine = con.execute(
                "SELECT COUNT(*) FROM assignments a JOIN tasks t ON t.id = a.task "
                "WHERE a.annotator=? AND t.kind=? AND a.answer IS NOT NULL",
                (annotator, kind),
            ).fetchone()[0]
        return {"mine": mine, "done": done, "total": total}

    # ------------------------------------------------------------ reporting
    def annotators(self) -> list[dict[str, Any]]:
        """Per annotator: name, invited/revoked/consented times, answers per kind and the time of the last one."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT an.name, an.invited, an.revoked, an.consented, "
                "SUM(t.kind='binary' AND a.answer IS NOT NULL) AS binary, SUM(t.kind='rank' AND a.answer IS NOT NULL) AS rank, "
                "MAX(a.answered) AS last FROM annotators an LEFT JOIN assignments a ON a.annotator = an.id "
                "LEFT JOIN tasks t ON t.id = a.task GROUP BY an.id ORDER BY an.name"
            ).fetchall()
        return [{**dict(r), "binary": r["binary"] or 0, "rank": r["rank"] or 0} for r in rows]

    def judgements(self) -> list[Judgement]:
        """Every answer, in the order given."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT a.answer, a.answered, an.name, t.kind, t.concept, t.images FROM assignments a "
                "JOIN tasks t ON t.id = a.task JOIN annotators an ON an.id = a.annotator "
                "WHERE a.answer IS NOT NULL ORDER BY a.seq"
            ).fetchall()
        out: list[Judgement] = []
        for r in rows:
            answer = json.loads(r["answer"])
            if r["kind"] == "binary":
                out.append(Binary(json.loads(r["images"])[0], r["name"], frozenset(answer["labels"]), r["answered"]))
            else:
                out.append(Rank(tuple(answer["order"]), r["concept"], r["name"], r["answered"]))
        return out

    def feedback(self) -> Feedback:
        """The study as a `Feedback` (what `export` writes)."""
        meta = self.meta()
        return Feedback(meta["labels"], self.judgements(), meta.get("images"))


def export_feedback(db: str | Path, out: str | Path) -> Feedback:
    """Write the study's answers to `out` (atomically, header first); returns what was written."""
    fb = Store.open(db).feedback()
    if not fb.judgements:
        raise UnseeError(f"nothing answered yet in {str(db)!r}; nothing to export")
    parent = Path(out).parent
    if not parent.is_dir():
        raise UnseeError(f"--out {str(out)!r}: folder {str(parent)!r} does not exist")
    save_feedback(out, fb)
    return fb
