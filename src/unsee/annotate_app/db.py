"""The study database: one SQLite file (WAL mode) with the image set, annotators, tasks and answers.

Tables
- meta: what the db was made for (image set path, labels) and the last detector / URL used.
- images: the manifest's ids, each with the detector's flag (flagged images start blurred).
- annotators: name and sha256 of the invite token (the token itself is never stored).
- sessions: browsers opened from an invite link: sha256 of the cookie and a per-session CSRF token.
- tasks: binary = one image; rank = a group of 2-5 images and the concept to order by.
  Each task is judged by `need` annotators.
- assignments: one row per (task, annotator), UNIQUE, so nobody judges a task twice. A row
  without an answer is a lease: the task is held for that annotator until `leased_until`,
  and counts toward `need`, so concurrent annotators are never handed the same slot.

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
from pathlib import Path
from typing import Any, Literal

from unsee.errors import UnseeError
from unsee.feedback import Binary, Feedback, Judgement, Rank, now, save_feedback
from unsee.files import ensure_writable_dir

SCHEMA_VERSION = 1
Kind = Literal["binary", "rank"]

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
    UNIQUE (task, annotator)
);
CREATE INDEX IF NOT EXISTS assignments_by_annotator ON assignments (annotator, seq);
"""


class TaskError(Exception):
    """A request the study cannot take; `status` is the HTTP status the server answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def hash_secret(secret: str) -> str:
    # Tokens are 256 random bits, so a plain (unsalted) hash cannot be brute-forced.
    return hashlib.sha256(secret.encode()).hexdigest()


def rank_groups(ids: Sequence[str], size: int, rng: random.Random) -> list[list[str]]:
    """Shuffle `ids` into groups of about `size` (sizes differ by at most one; none has fewer than 2)."""
    order = list(ids)
    rng.shuffle(order)
    n = len(order)
    if n < 2:
        return []
    g = min(-(-n // size), n // 2)
    return [order[i * n // g : (i + 1) * n // g] for i in range(g)]


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
            raise UnseeError(f"annotation database {str(path)!r} does not exist; start a study with "
                             f"`unsee annotate serve --images SET --db {path} --labels ...`")
        with store._connect() as con:
            has_meta = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if not has_meta or "schema" not in store._meta(con):
                raise UnseeError(f"{str(path)!r} is not an unsee annotation database (no study in it)")
        return store

    @classmethod
    def create_or_check(cls, path: str | Path, images: str | Path, ids: Sequence[str], labels: Sequence[str]) -> Store:
        """Make the study for image set `images` (its manifest `ids`) and `labels`, or check an existing one matches."""
        path = Path(path)
        if path.exists() and not path.is_file():
            raise UnseeError(f"--db {str(path)!r} is a folder; give a file name such as {str(path / 'feedback.db')!r}")
        ensure_writable_dir(path.parent, "database folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        images = str(Path(images).resolve())
        with store._connect() as con:
            tables = {r["name"] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:
                raise UnseeError(f"{str(path)!r} is a database of something else; give a new file for --db")
            con.execute("PRAGMA journal_mode=WAL")  # persistent; readers never block the writer
            con.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        with store._write() as con:
            meta = store._meta(con)
            if not meta:
                con.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("schema", str(SCHEMA_VERSION)), ("images", images), ("labels", json.dumps(list(labels))),
                    ("created", now())])
            else:
                if meta.get("images") != images:
                    raise UnseeError(f"database {str(path)!r} was made for image set {meta.get('images')!r}, not {images!r}; "
                                     "use another --db for a new image set")
                old = tuple(json.loads(meta.get("labels", "[]")))
                if old != tuple(labels):
                    raise UnseeError(f"database {str(path)!r} was made for labels {','.join(old)!r}, got {','.join(labels)!r}; "
                                     "changing labels mid-study would mix judgements of different questions")
            known = {r["id"] for r in con.execute("SELECT id FROM images")}
            gone = sorted(known - set(ids))
            if gone:
                raise UnseeError(f"image set {images!r} no longer has {len(gone)} image(s) the study uses "
                                 f"(e.g. {gone[0]!r}); was it regenerated? use another --db")
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

    def add_tasks(self, kind: Kind, per_image: int, group_size: int = 5, seed: int = 0) -> int:
        """Tasks for every image (binary) or every image x label (rank) not yet in one; returns how many were new.

        `need` of all tasks of `kind` becomes `per_image` (raise it later to collect more judgements).
        """
        rng = random.Random(seed)
        with self._write() as con:
            ids = [r["id"] for r in con.execute("SELECT id FROM images ORDER BY id")]
            labels = json.loads(self._meta(con)["labels"])
            rows: list[tuple[str, str | None, str, int]] = []
            if kind == "binary":
                have = {json.loads(r["images"])[0] for r in con.execute("SELECT images FROM tasks WHERE kind='binary'")}
                new = [i for i in ids if i not in have]
                rng.shuffle(new)  # a random order, so annotators do not all start on the manifest's first prompt
                rows = [("binary", None, json.dumps([i]), per_image) for i in new]
            else:
                if len(ids) < 2:
                    raise UnseeError(f"rank tasks need at least 2 images; the image set has {len(ids)}")
                for concept in labels:
                    have: set[str] = set()
                    for r in con.execute("SELECT images FROM tasks WHERE kind='rank' AND concept=?", (concept,)):
                        have.update(json.loads(r["images"]))
                    groups = rank_groups([i for i in ids if i not in have], group_size, rng)
                    rows += [("rank", concept, json.dumps(g), per_image) for g in groups]
                rng.shuffle(rows)
            con.executemany("INSERT INTO tasks (kind, concept, images, need) VALUES (?, ?, ?, ?)", rows)
            con.execute("UPDATE tasks SET need=? WHERE kind=?", (per_image, kind))
        return len(rows)

    def unscored(self) -> list[str]:
        with self._connect() as con:
            return [r["id"] for r in con.execute("SELECT id FROM images WHERE score IS NULL ORDER BY id")]

    def set_flags(self, scores: dict[str, float], threshold: float) -> None:
        """Store each image's detector score and whether it reaches `threshold` (then it starts blurred)."""
        with self._write() as con:
            con.executemany("UPDATE images SET score=?, flagged=? WHERE id=?",
                            [(float(s), int(s >= threshold), i) for i, s in scores.items()])

    def reset_scores(self) -> None:
        """Forget scores (not flags) so a new detector rescores every image."""
        with self._write() as con:
            con.execute("UPDATE images SET score=NULL")

    def flagged(self) -> dict[str, bool]:
        with self._connect() as con:
            return {r["id"]: bool(r["flagged"]) for r in con.execute("SELECT id, flagged FROM images")}

    # ------------------------------------------------------------ annotators
    def invite(self, name: str) -> str:
        """A new invite token for `name` (a revoked annotator is let back in with a new token); returns the token."""
        name = name.strip()
        if not name or len(name) > 64 or not name.isprintable():
            raise UnseeError(f"--name must be 1-64 printable characters, got {name!r}")
        token = secrets.token_urlsafe(32)
        with self._write() as con:
            row = con.execute("SELECT id, revoked FROM annotators WHERE name=?", (name,)).fetchone()
            if row is None:
                con.execute("INSERT INTO annotators (name, token_hash, invited) VALUES (?, ?, ?)",
                            (name, hash_secret(token), now()))
            elif row["revoked"] is None:
                raise UnseeError(f"annotator {name!r} already has a link; to issue a new one, first "
                                 f"`unsee annotate revoke --db {self.path} --name {name}`")
            else:
                con.execute("DELETE FROM sessions WHERE annotator=?", (row["id"],))  # old browsers stay out
                con.execute("UPDATE annotators SET token_hash=?, revoked=NULL, invited=? WHERE id=?",
                            (hash_secret(token), now(), row["id"]))
        return token

    def revoke(self, name: str) -> None:
        """Stop `name`'s link and sessions; their answers are kept, their held tasks go back to the pool."""
        with self._write() as con:
            row = con.execute("SELECT id, revoked FROM annotators WHERE name=?", (name,)).fetchone()
            if row is None:
                names = [r["name"] for r in con.execute("SELECT name FROM annotators ORDER BY name")]
                raise UnseeError(f"no annotator {name!r} in {str(self.path)!r}; annotators: {', '.join(names) or 'none yet'}")
            if row["revoked"] is None:
                con.execute("UPDATE annotators SET revoked=? WHERE id=?", (now(), row["id"]))
            con.execute("DELETE FROM assignments WHERE annotator=? AND answer IS NULL", (row["id"],))

    def annotator_by_token(self, token: str) -> sqlite3.Row | None:
        with self._connect() as con:
            return con.execute("SELECT * FROM annotators WHERE token_hash=?", (hash_secret(token),)).fetchone()

    def open_session(self, annotator: int) -> str:
        """A new browser session for `annotator`; returns the cookie value (only its hash is stored)."""
        secret = secrets.token_urlsafe(32)
        with self._write() as con:
            con.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                        (hash_secret(secret), annotator, secrets.token_urlsafe(32), now()))
        return secret

    def session(self, secret: str) -> sqlite3.Row | None:
        """(annotator id, name, revoked, consented, csrf) of a session cookie, or None."""
        with self._connect() as con:
            return con.execute(
                "SELECT a.id, a.name, a.revoked, a.consented, s.csrf FROM sessions s "
                "JOIN annotators a ON a.id = s.annotator WHERE s.hash=?", (hash_secret(secret),)).fetchone()

    def consent(self, annotator: int) -> None:
        with self._write() as con:
            con.execute("UPDATE annotators SET consented=COALESCE(consented, ?) WHERE id=?", (now(), annotator))

    # ------------------------------------------------------------ tasks and answers
    def _task(self, con: sqlite3.Connection, task_id: int) -> dict[str, Any] | None:
        r = con.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
        if r is None:
            return None
        images = json.loads(r["images"])
        flags = {x["id"]: bool(x["flagged"]) for x in con.execute(
            f"SELECT id, flagged FROM images WHERE id IN ({','.join('?' * len(images))})", images)}
        return {"id": r["id"], "kind": r["kind"], "concept": r["concept"], "images": images,
                "flagged": [flags.get(i, False) for i in images], "need": r["need"]}

    def _next(self, con: sqlite3.Connection, annotator: int, kind: Kind, lease: float) -> dict[str, Any] | None:
        """The task held for `annotator`, else a new lease on the open task closest to done."""
        t = time.time()
        con.execute("DELETE FROM assignments WHERE answer IS NULL AND leased_until < ?", (t,))
        held = con.execute(
            "SELECT a.id, a.task FROM assignments a JOIN tasks t ON t.id = a.task "
            "WHERE a.annotator=? AND a.answer IS NULL AND t.kind=? ORDER BY a.id LIMIT 1", (annotator, kind)).fetchone()
        if held is not None:
            con.execute("UPDATE assignments SET leased_until=? WHERE id=?", (t + lease, held["id"]))
            return self._task(con, held["task"])
        # Closest to done first: judged images accumulate their `need` judgements early, so
        # agreement can be measured from the first day.
        row = con.execute(
            "SELECT t.id FROM tasks t LEFT JOIN (SELECT task, COUNT(*) AS n FROM assignments GROUP BY task) c "
            "ON c.task = t.id WHERE t.kind=? AND COALESCE(c.n, 0) < t.need AND NOT EXISTS "
            "(SELECT 1 FROM assignments m WHERE m.task = t.id AND m.annotator = ?) "
            "ORDER BY COALESCE(c.n, 0) DESC, t.id LIMIT 1", (kind, annotator)).fetchone()
        if row is None:
            return None
        con.execute("INSERT INTO assignments (task, annotator, leased_until) VALUES (?, ?, ?)", (row["id"], annotator, t + lease))
        return self._task(con, row["id"])

    def next_task(self, annotator: int, kind: Kind, lease: float) -> dict[str, Any] | None:
        """The annotator's current task (leased for `lease` seconds), or None when nothing is left for them."""
        with self._write() as con:
            return self._next(con, annotator, kind, lease)

    def _check_answer(self, task: dict[str, Any], labels: list[str] | None, none: bool, order: list[str] | None,
                      allowed: Sequence[str]) -> dict[str, Any]:
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

    def answer(self, annotator: int, kind: Kind, task_id: int, *, labels: list[str] | None = None, none: bool = False,
               order: list[str] | None = None, lease: float = 900) -> dict[str, Any] | None:
        """Record an answer and hand out the next task, in one transaction; returns the next task or None."""
        with self._write() as con:
            task = self._task(con, task_id)
            if task is None or task["kind"] != kind:
                raise TaskError(404, f"no {kind} task {task_id}")
            answer = self._check_answer(task, labels, none, order, json.loads(self._meta(con)["labels"]))
            row = con.execute("SELECT id, answer FROM assignments WHERE task=? AND annotator=?", (task_id, annotator)).fetchone()
            if row is not None and row["answer"] is not None:
                raise TaskError(409, "you already answered this task")
            if row is None:  # the lease ran out; the answer still counts if nobody took the place since
                taken = con.execute("SELECT COUNT(*) FROM assignments WHERE task=?", (task_id,)).fetchone()[0]
                if taken >= task["need"]:
                    raise TaskError(409, "your hold on this task ran out and it went to someone else; here is a new one")
                row = {"id": con.execute("INSERT INTO assignments (task, annotator) VALUES (?, ?)", (task_id, annotator)).lastrowid}
            seq = con.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM assignments").fetchone()[0]
            con.execute("UPDATE assignments SET answer=?, answered=?, seq=?, leased_until=NULL WHERE id=?",
                        (json.dumps(answer), now(), seq, row["id"]))
            return self._next(con, annotator, kind, lease)

    def undo(self, annotator: int, kind: Kind, lease: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Take back the annotator's last answer: its task becomes current again. Returns (task, the old answer)."""
        with self._write() as con:
            last = con.execute(
                "SELECT a.id, a.task, a.answer FROM assignments a JOIN tasks t ON t.id = a.task "
                "WHERE a.annotator=? AND t.kind=? AND a.answer IS NOT NULL ORDER BY a.seq DESC LIMIT 1",
                (annotator, kind)).fetchone()
            if last is None:
                raise TaskError(409, "nothing to undo")
            con.execute("DELETE FROM assignments WHERE annotator=? AND answer IS NULL AND task IN "
                        "(SELECT id FROM tasks WHERE kind=?)", (annotator, kind))
            con.execute("UPDATE assignments SET answer=NULL, answered=NULL, seq=NULL, leased_until=? WHERE id=?",
                        (time.time() + lease, last["id"]))
            task = self._task(con, last["task"])
            assert task is not None  # a foreign key keeps it
            return task, json.loads(last["answer"])

    def progress(self, annotator: int | None, kind: Kind) -> dict[str, int]:
        """mine: answers of `annotator`; done/total: judgements given / wanted over all tasks of `kind`."""
        with self._connect() as con:
            total, done = con.execute(
                "SELECT COALESCE(SUM(t.need), 0), COALESCE(SUM(MIN(t.need, COALESCE(c.n, 0))), 0) FROM tasks t "
                "LEFT JOIN (SELECT task, COUNT(*) AS n FROM assignments WHERE answer IS NOT NULL GROUP BY task) c "
                "ON c.task = t.id WHERE t.kind=?", (kind,)).fetchone()
            mine = con.execute("SELECT COUNT(*) FROM assignments a JOIN tasks t ON t.id = a.task "
                               "WHERE a.annotator=? AND t.kind=? AND a.answer IS NOT NULL", (annotator, kind)).fetchone()[0]
        return {"mine": mine, "done": done, "total": total}

    # ------------------------------------------------------------ reporting
    def annotators(self) -> list[dict[str, Any]]:
        """Per annotator: name, invited/revoked/consented times, answers per kind and the time of the last one."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT an.name, an.invited, an.revoked, an.consented, "
                "SUM(t.kind='binary' AND a.answer IS NOT NULL) AS binary, SUM(t.kind='rank' AND a.answer IS NOT NULL) AS rank, "
                "MAX(a.answered) AS last FROM annotators an LEFT JOIN assignments a ON a.annotator = an.id "
                "LEFT JOIN tasks t ON t.id = a.task GROUP BY an.id ORDER BY an.name").fetchall()
        return [{**dict(r), "binary": r["binary"] or 0, "rank": r["rank"] or 0} for r in rows]

    def judgements(self) -> list[Judgement]:
        """Every answer, in the order given."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT a.answer, a.answered, an.name, t.kind, t.concept, t.images FROM assignments a "
                "JOIN tasks t ON t.id = a.task JOIN annotators an ON an.id = a.annotator "
                "WHERE a.answer IS NOT NULL ORDER BY a.seq").fetchall()
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
