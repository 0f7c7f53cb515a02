"""The annotation web app on real components: a SQLite file, a server process on 127.0.0.1, headless Chromium.

Servers are started as users start them (`python -m unsee annotate serve ...`) and killed in
finalizers. Clients speak plain HTTP (http.client), so paths are sent byte for byte.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
import torch
from click.testing import CliRunner

try:
    import fastapi  # noqa: F401
except ImportError:  # loud, like a missing Chromium: `make` installs the extra
    pytest.fail("the annotation app needs its extra: pip install -e '.[annotate]'", pytrace=False)

from unsee.annotate_app.agreement import krippendorff_alpha_nominal, label_alphas  # noqa: E402
from unsee.annotate_app.config import ServeConfig  # noqa: E402
from unsee.annotate_app.db import Store, TaskError, rank_groups  # noqa: E402
from unsee.cli import cli  # noqa: E402
from unsee.feedback import load_feedback  # noqa: E402
from unsee.imageset import ImageSet  # noqa: E402
from unsee.testing import write_image_set  # noqa: E402

LABELS = ("a", "b", "c")


def make_set(folder: Path, n: int, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    return write_image_set(folder, torch.rand(n, 3, 8, 8, generator=g), [f"prompt {i}" for i in range(n)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`unsee annotate serve` in a subprocess; `start` returns once it answers HTTP."""

    def __init__(self, log: Path, *args: str):
        self.port = free_port()
        self.args = [sys.executable, "-m", "unsee", "annotate", "serve", *args, "--port", str(self.port)]
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> Server:
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/")
                c.getresponse().read()
                return self
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"server did not answer in {timeout} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def _servers():
    started: list[Server] = []

    def start(log: Path, *args: str) -> Server:
        s = Server(log, *args)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.kill()


servers = pytest.fixture(scope="module", name="servers")(_servers)  # shared by the tests of one study
own_servers = pytest.fixture(name="own_servers")(_servers)  # killed as soon as the test ends


class Client:
    """One annotator without a browser: the session cookie kept by hand, the CSRF token read off the page."""

    def __init__(self, base: str, name: str = ""):
        self.port = int(base.rsplit(":", 1)[1])
        self.name = name
        self.cookie: str | None = None
        self.csrf: str | None = None
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = f"unsee_session={self.cookie}"
        for attempt in range(2):  # one reconnect: the server closes idle keep-alive connections
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        m = re.search(r"unsee_session=([^;]+)", r.getheader("set-cookie") or "")
        if m:
            self.cookie = m.group(1)
        return r.status, r, data

    def join(self, token: str) -> int:
        return self.request("GET", f"/join/{token}")[0]

    def consent(self) -> int:
        _, _, page = self.request("GET", "/consent")
        csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
        status, _, _ = self.request(
            "POST",
            "/consent",
            urlencode({"csrf": csrf, "agree": "yes"}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        _, _, page = self.request("GET", "/")
        self.csrf = re.search(rb'data-csrf="([^"]+)"', page).group(1).decode()
        return status

    def api(self, method: str, path: str, data=None, *, raw: bytes | None = None, csrf: str | None = "session"):
        headers = {"Content-Type": "application/json"}
        if csrf == "session":
            csrf = self.csrf
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf
        body = raw if raw is not None else None if data is None else json.dumps(data).encode()
        status, _, out = self.request(method, path, body, headers)
        return status, json.loads(out) if out else None


def enter(base: str, db: Path, name: str) -> Client:
    c = Client(base, name)
    assert c.join(Store.open(db).invite(name)) == 303
    assert c.consent() == 303
    return c


def cli_ok(*args: str) -> str:
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, r.output
    return r.output


# ---------------------------------------------------------------- agreement
def test_krippendorff_alpha_matches_the_textbook_examples():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", A: binary data, two observers.
    # 10 units; units 1, 3, 6, 9 disagree -> o_01 = o_10 = 4; units 4, 5, 7, 8, 10 are 0-0 -> o_00 = 10;
    # unit 2 is 1-1 -> o_11 = 2. n_0 = 14, n_1 = 6, n = 20.
    # alpha = 1 - (n - 1) o_01 / (n_0 n_1) = 1 - 19 * 4 / (14 * 6) = 0.0952
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha_nominal(list(zip(a, b, strict=True))) == pytest.approx(1 - 19 * 4 / (14 * 6))
    assert krippendorff_alpha_nominal(list(zip(a, b, strict=True))) == pytest.approx(0.095, abs=5e-4)
    # Same paper, C: nominal data, four observers, missing values (None); the paper gives alpha = 0.743.
    rows = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[r[u] for r in rows if r[u] is not None] for u in range(12)]
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)
    # Edges: perfect agreement; no variation at all (undefined); nothing pairable.
    assert krippendorff_alpha_nominal([[0, 0], [1, 1], [1, 1, 1]]) == 1.0
    assert math.isnan(krippendorff_alpha_nominal([[1, 1], [1, 1]]))
    assert math.isnan(krippendorff_alpha_nominal([[1], [0]]))


def test_label_alphas_read_each_label_as_present_or_absent():
    f = frozenset
    judgements = [("x", f({"a"})), ("x", f({"a", "b"})), ("y", f()), ("y", f({"b"})), ("z", f({"a"}))]
    alphas = label_alphas(judgements, ("a", "b"))
    assert alphas["a"] == (1.0, 2)  # x: a, a; y: -, -  (z has one judgement: not pairable)
    assert alphas["b"][0] == pytest.approx(krippendorff_alpha_nominal([[False, True], [False, True]]))


# ---------------------------------------------------------------- the store
@pytest.mark.parametrize("n,size", [(2, 5), (6, 5), (7, 5), (11, 5), (3, 2), (9, 2), (10, 3), (25, 5)])
def test_rank_groups_cover_every_image_once_and_none_is_alone(n, size):
    ids = [f"{i:03d}" for i in range(n)]
    groups = rank_groups(ids, size, random.Random(0))
    assert sorted(x for g in groups for x in g) == ids
    assert all(2 <= len(g) <= max(size, 3) for g in groups)
    assert max(map(len, groups)) - min(map(len, groups)) <= 1


def test_store_leases_late_answers_and_undo(tmp_path):
    images = make_set(tmp_path / "set", 3)
    store = Store.create_or_check(tmp_path / "s.db", images, ImageSet.load(images).ids, LABELS)
    store.add_tasks("binary", per_image=1)
    ann, bob = (store.annotator_by_token(store.invite(name))["id"] for name in ("ann", "bob"))
    t = store.next_task(ann, "binary", lease=0.05)
    assert store.next_task(ann, "binary", lease=0.05)["id"] == t["id"]  # a reload shows the held task
    time.sleep(0.1)  # the hold runs out: the place goes to bob, and ann's late answer is refused
    assert store.next_task(bob, "binary", lease=60)["id"] == t["id"]
    with pytest.raises(TaskError) as e:
        store.answer(ann, "binary", t["id"], labels=["a"])
    assert e.value.status == 409
    nxt = store.answer(bob, "binary", t["id"], labels=["a"], lease=60)
    with pytest.raises(TaskError) as e:
        store.answer(bob, "binary", t["id"], labels=["b"])
    assert e.value.status == 409  # never twice
    # undo: the answer is reopened, its task is current again, and a new answer replaces it
    task, previous = store.undo(bob, "binary")
    assert task["id"] == t["id"] and previous == {"labels": ["a"]}
    assert store.next_task(bob, "binary", lease=60)["id"] == t["id"]
    assert [(j.annotator, j.labels) for j in store.judgements()] == [("bob", frozenset({"a"}))]  # it stands till then
    store.answer(bob, "binary", t["id"], labels=[], none=True)
    assert [(j.annotator, j.labels) for j in store.judgements()] == [("bob", frozenset())]
    assert nxt is not None and store.progress(bob, "binary") == {"mine": 1, "done": 1, "total": 3}
    with pytest.raises(TaskError, match="nothing to undo"):
        store.undo(ann, "binary")


# ---------------------------------------------------------------- bad input
@pytest.fixture()
def bad(tmp_path):
    a = make_set(tmp_path / "a", 3)
    make_set(tmp_path / "b", 3, seed=1)
    from unsee.annotate_app.server import open_study, prepare

    open_study(prepare(ServeConfig(images=str(a), db=str(tmp_path / "a.db"), labels=("x,y",))))
    (tmp_path / "traversal").mkdir()
    shutil.copy(a / "00000-000.png", tmp_path / "outside.png")
    (tmp_path / "traversal" / "manifest.jsonl").write_text(
        json.dumps({"id": "evil", "prompt": "p", "seed": 0, "file": "../outside.png"}) + "\n"
    )
    return tmp_path


BAD = [
    ("missing image set", ["serve", "--images", "{d}/nope", "--db", "{d}/n.db", "--labels", "x"], "does not exist"),
    ("empty labels", ["serve", "--images", "{d}/a", "--db", "{d}/n.db", "--labels", ""], "--labels is empty"),
    ("label twice", ["serve", "--images", "{d}/a", "--db", "{d}/n.db", "--labels", "x,y,x"], "names x twice"),
    (
        "db of another set",
        ["serve", "--images", "{d}/b", "--db", "{d}/a.db", "--labels", "x,y"],
        "was made for image set",
    ),
    ("other labels", ["serve", "--images", "{d}/a", "--db", "{d}/a.db", "--labels", "x,z"], "was made for labels"),
    (
        "group too big",
        ["serve", "--images", "{d}/a", "--db", "{d}/n.db", "--labels", "x", "--kind", "rank", "--group-size", "6"],
        "between 2 and 5",
    ),
    (
        "file outside the set",
        ["serve", "--images", "{d}/traversal", "--db", "{d}/t.db", "--labels", "x"],
        "outside the image set",
    ),
    ("not a db", ["status", "--db", "{d}/a/manifest.jsonl"], "not an unsee annotation database"),
    ("missing db", ["invite", "--db", "{d}/none.db", "--name", "x"], "does not exist"),
    ("unknown annotator", ["revoke", "--db", "{d}/a.db", "--name", "nobody"], "no annotator 'nobody'"),
    ("nothing to export", ["export", "--db", "{d}/a.db", "--out", "{d}/fb.jsonl"], "nothing answered yet"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_error_exit_2(bad, case):
    _, args, message = case
    r = CliRunner().invoke(cli, ["annotate", *[a.format(d=bad) for a in args]])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert message in lines[0]
    assert not (bad / "fb.jsonl").exists() and not (bad / "n.db").exists()


def test_inviting_twice_is_refused_until_revoked(bad):
    db = str(bad / "a.db")
    link = cli_ok("annotate", "invite", "--db", db, "--name", "ann").strip().splitlines()[0]
    assert re.fullmatch(r"http://127\.0\.0\.1:8000/join/[A-Za-z0-9_-]{40,}", link)
    token = link.rsplit("/", 1)[1]
    with closing(sqlite3.connect(bad / "a.db")) as con:
        (stored,) = con.execute("SELECT token_hash FROM annotators").fetchone()
    assert len(stored) == 64  # only a sha256 is stored, never the token (nor in the WAL)
    assert all(token.encode() not in p.read_bytes() for p in bad.glob("a.db*"))
    r = CliRunner().invoke(cli, ["annotate", "invite", "--db", db, "--name", "ann"])
    assert r.exit_code == 2 and "already has a link" in r.output
    cli_ok("annotate", "revoke", "--db", db, "--name", "ann")
    assert cli_ok("annotate", "invite", "--db", db, "--name", "ann").strip() != link


# ---------------------------------------------------------------- a running server
@pytest.fixture(scope="module")
def binary_study(tmp_path_factory, servers):
    d = tmp_path_factory.mktemp("binary")
    images = make_set(d / "set", 12)
    db = d / "study.db"
    server = servers(
        d / "server.log", "--images", str(images), "--db", str(db), "--labels", ",".join(LABELS), "--per-image", "3"
    )
    return server, db, images


def test_access_is_refused_without_a_valid_session_csrf_or_body(binary_study):
    server, db, images = binary_study
    image = ImageSet.load(images).ids[0]
    anon = Client(server.base)
    # 1. No token: no page, no image, no script.
    for path in ("/", "/consent", "/api/task", f"/img/{image}", "/static/app.js", "/declined"):
        status, _, data = anon.request("GET", path)
        assert status == 401, path
        assert b"\x89PNG" not in data
    assert anon.join("not-a-token") == 401
    # 2. A valid token, but no consent yet: no tasks, no images.
    eve = Client(server.base, "eve")
    eve_token = Store.open(db).invite("eve")
    assert eve.join(eve_token) == 303
    assert eve.request("GET", "/")[1].getheader("location") == "/consent"
    assert eve.api("GET", "/api/task")[0] == 403
    assert eve.request("GET", f"/img/{image}")[0] == 403
    # 3. CSRF: the consent form and the API need this session's token.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert eve.request("POST", "/consent", b"agree=yes", form)[0] == 403
    other = enter(server.base, db, "other")
    assert eve.request("POST", "/consent", urlencode({"csrf": other.csrf, "agree": "yes"}).encode(), form)[0] == 403
    assert eve.consent() == 303
    status, j = eve.api("GET", "/api/task")
    assert status == 200 and j["task"]["images"][0]["id"]
    task = j["task"]["id"]
    assert eve.api("POST", "/api/answer", {"task": task, "labels": ["a"]}, csrf=None)[0] == 403
    assert eve.api("POST", "/api/answer", {"task": task, "labels": ["a"]}, csrf=other.csrf)[0] == 403
    assert eve.api("POST", "/api/undo", csrf="forged")[0] == 403
    # 4. Malformed bodies: 422 with a message saying what is wrong.
    for body, says in [
        (b"{not json", "Invalid JSON"),
        (b"", "Invalid JSON"),
        (json.dumps({"task": str(task), "labels": []}).encode(), "task"),
        (json.dumps({"task": task, "labels": "a"}).encode(), "labels"),
        (json.dumps({"task": task, "labels": ["a"], "admin": True}).encode(), "admin"),
        (json.dumps({"task": task, "labels": ["zebra"]}).encode(), "unknown label(s) zebra"),
        (json.dumps({"task": task, "labels": []}).encode(), "answer 'none'"),
        (json.dumps({"task": task, "labels": ["a"], "none": True}).encode(), "answer 'none'"),
        (json.dumps({"task": task, "order": [image]}).encode(), "binary answer"),
    ]:
        status, j = eve.api("POST", "/api/answer", raw=body)
        assert status == 422 and says in j["error"], (body, j)
    assert eve.api("POST", "/api/answer", {"task": 10**6, "labels": ["a"]})[0] == 404
    assert not [j for j in Store.open(db).judgements() if j.annotator == "eve"]
    # 5. Paths: images are served by manifest id only.
    status, r, data = eve.request("GET", f"/img/{image}")
    assert (
        status == 200 and data.startswith(b"\x89PNG") and "default-src 'none'" in r.getheader("content-security-policy")
    )
    for path in (
        "/img/..%2fmanifest.jsonl",
        "/img/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/img/%2e%2e%2fstudy.db",
        "/img/../manifest.jsonl",
        f"/img/{image}.png",
        "/img/%00",
        "/static/..%2f..%2fdb.py",
        "/static/server.py",
        "/ref/a/0",
        "/ref/..%2f/0",
    ):
        status, _, data = eve.request("GET", path)
        assert status == 404, path
        assert b'"prompt"' not in data and b"root:" not in data and b"SQLite" not in data
    # 6. Revoked: the open session and the link stop working at once.
    assert eve.api("POST", "/api/answer", {"task": task, "labels": ["a"]})[0] == 200
    cli_ok("annotate", "revoke", "--db", str(db), "--name", "eve")
    assert eve.api("GET", "/api/task")[0] == 403
    assert eve.request("GET", f"/img/{image}")[0] == 403
    assert Client(server.base).join(eve_token) == 403
    assert [j.labels for j in Store.open(db).judgements() if j.annotator == "eve"] == [frozenset({"a"})]  # kept
    # 7. It listens on 127.0.0.1 only.
    assert _listening_addresses(server.port) == ["127.0.0.1"]


def _listening_addresses(port: int) -> list[str]:
    out = []
    for line in (
        Path("/proc/net/tcp").read_text().splitlines()[1:] + Path("/proc/net/tcp6").read_text().splitlines()[1:]
    ):
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":  # 0A: LISTEN
            out.append(socket.inet_ntoa(bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr)
    return out


# ---------------------------------------------------------------- load and crashes
def _answer_until_done(
    client: Client, rng: random.Random, acked: list, stop: threading.Event | None = None, inflight: dict | None = None
) -> None:
    """Answer task after task with random labels; `acked` gets each answer the server confirmed,
    `inflight[name]` the (task id, answer) whose reply has not come back yet."""
    status, j = client.api("GET", "/api/task")
    assert status == 200, j
    while j["task"] and not (stop and stop.is_set()):
        t = j["task"]
        labels = sorted(rng.sample(LABELS, rng.randint(0, 2)))
        sent = (client.name, t["images"][0]["id"], frozenset(labels))
        if inflight is not None:
            inflight[client.name] = (t["id"], sent)
        status, j = client.api("POST", "/api/answer", {"task": t["id"], "labels": labels, "none": not labels})
        assert status == 200, j
        acked.append(sent)
        if inflight is not None:
            del inflight[client.name]


def test_eight_concurrent_annotators_store_every_answer_exactly_once(tmp_path, own_servers):
    n_images, n_annotators = 200, 8
    images = make_set(tmp_path / "set", n_images)
    db = tmp_path / "study.db"
    server = own_servers(
        tmp_path / "server.log",
        "--images",
        str(images),
        "--db",
        str(db),
        "--labels",
        ",".join(LABELS),
        "--per-image",
        str(n_annotators),
    )
    clients = [enter(server.base, db, f"ann-{k}") for k in range(n_annotators)]
    sent: list[list] = [[] for _ in clients]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            _answer_until_done(clients[k], random.Random(k), sent[k])
        except BaseException as e:  # surfaced below; a thread's assert would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_annotators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    # Every image needs all 8 annotators, so each of them answers exactly 200.
    assert [len(s) for s in sent] == [n_images] * n_annotators
    out = tmp_path / "feedback.jsonl"
    assert "1600 judgements (1600 binary, 0 rank) by 8 annotator(s)" in cli_ok(
        "annotate", "export", "--db", str(db), "--out", str(out)
    )
    fb = load_feedback(out, image_ids=ImageSet.load(images).ids)
    assert fb.labels == LABELS and fb.images == str(images.resolve())
    got = sorted((j.annotator, j.image, tuple(sorted(j.labels))) for j in fb.binary)
    want = sorted((who, image, tuple(sorted(labels))) for s in sent for who, image, labels in s)
    assert got == want  # nothing lost, nothing duplicated, nothing changed
    status = cli_ok("annotate", "status", "--db", str(db))
    assert "binary: 1600 of 1600 judgements (100%)" in status
    assert all(re.search(rf"ann-{k}\s+active\s+200\s+0", status) for k in range(n_annotators))
    assert all(re.search(rf"  {lb}\s+-?\d\.\d{{3}}  over 200 image", status) for lb in LABELS)


def test_a_killed_server_loses_no_answer_and_resumes(tmp_path, own_servers):
    images = make_set(tmp_path / "set", 60)
    db = tmp_path / "study.db"
    args = ("--images", str(images), "--db", str(db), "--labels", ",".join(LABELS), "--per-image", "1")
    server = own_servers(tmp_path / "server.log", *args)
    clients = [enter(server.base, db, f"ann-{k}") for k in range(2)]
    acked: list = []
    inflight: dict = {}
    stop = threading.Event()

    def work(k: int) -> None:
        try:
            _answer_until_done(clients[k], random.Random(k), acked, stop, inflight)
        except (OSError, http.client.HTTPException):
            pass  # the server died under this request

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(acked) < 20 and time.time() < deadline:
        time.sleep(0.005)
    server.kill()  # SIGKILL mid-session: no shutdown code runs
    stop.set()
    for t in threads:
        t.join(30)
    answered = list(acked)
    assert 20 <= len(answered) < 60
    # Restart on the same port and database; the same browser sessions carry on. An answer whose
    # reply was lost either landed (the annotator has moved on) or not (the same task is back).
    server.start()
    for c in clients:
        status, j = c.api("GET", "/api/task")
        assert status == 200
        if c.name in inflight and (j["task"] is None or j["task"]["id"] != inflight[c.name][0]):
            answered.append(inflight[c.name][1])
    stored = [(j.annotator, j.image, j.labels) for j in Store.open(db).judgements()]
    assert sorted(stored, key=repr) == sorted(answered, key=repr)  # nothing answered is lost, nothing doubled
    # They finish the study: every image judged exactly once (--per-image 1).
    for k, c in enumerate(clients):
        _answer_until_done(c, random.Random(100 + k), answered)
    stored = [(j.annotator, j.image, j.labels) for j in Store.open(db).judgements()]
    assert sorted(stored, key=repr) == sorted(answered, key=repr)
    assert sorted(image for _, image, _ in stored) == ImageSet.load(images).ids


# ---------------------------------------------------------------- starting against a running study
def _dump(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as con:
        return list(con.iterdump())


def _refused(*args: str) -> str:
    """The one-line error of a CLI call that must fail with exit code 2."""
    r = CliRunner().invoke(cli, list(args))
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def test_a_failed_start_leaves_a_running_study_untouched(tmp_path, own_servers):
    images = make_set(tmp_path / "set", 12)
    db = tmp_path / "study.db"
    args = ("annotate", "serve", "--images", str(images), "--db", str(db), "--labels", ",".join(LABELS))
    server = own_servers(tmp_path / "server.log", *args[2:], "--per-image", "3")
    ann = enter(server.base, db, "ann")
    for _ in range(2):
        task = ann.api("GET", "/api/task")[1]["task"]
        assert ann.api("POST", "/api/answer", {"task": task["id"], "labels": ["a"]})[0] == 200
    before = _dump(db)
    taken = str(server.port)
    # Another --per-image on the stored study is refused before any port is tried, unless asked for.
    says = _refused(*args, "--per-image", "1", "--port", taken)
    assert "--per-image 3" in says and "--change-settings" in says
    # A start that cannot listen writes nothing: not the asked change, nor the URL, nor the invite lifetime.
    assert "cannot listen" in _refused(*args, "--per-image", "1", "--change-settings", "--port", taken)
    assert "cannot listen" in _refused(
        *args, "--per-image", "3", "--url", "https://elsewhere.example.org", "--invite-days", "2", "--port", taken
    )
    assert _dump(db) == before
    assert "cannot listen" in _refused(*args[:4], "--db", str(tmp_path / "new.db"), *args[6:], "--port", taken)
    assert not (tmp_path / "new.db").exists()
    # The running server still serves the whole study, and invite links still point at it.
    status, j = ann.api("GET", "/api/task")
    assert status == 200 and j["progress"] == {"mine": 2, "done": 2, "total": 36} and j["task"]
    assert cli_ok("annotate", "invite", "--db", str(db), "--name", "bob").startswith(f"{server.base}/join/")
    # Asked for and listening: the change is made, and the study now lives at the new address.
    second = own_servers(tmp_path / "second.log", *args[2:], "--per-image", "1", "--change-settings")
    with closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT DISTINCT need FROM tasks").fetchall() == [(1,)]
        assert con.execute("SELECT value FROM meta WHERE key='url'").fetchone() == (second.base,)


# ---------------------------------------------------------------- hard edges
@pytest.fixture(scope="module")
def edge_study(tmp_path_factory, servers):
    d = tmp_path_factory.mktemp("edges")
    images = make_set(d / "set", 40)
    db = d / "study.db"
    server = servers(
        d / "server.log", "--images", str(images), "--db", str(db), "--labels", ",".join(LABELS), "--per-image", "1"
    )
    return server, db


def _has_security_headers(r: http.client.HTTPResponse) -> bool:
    return (
        (r.getheader("content-security-policy") or "").startswith("default-src 'none'")
        and r.getheader("x-content-type-options") == "nosniff"
        and r.getheader("x-frame-options") == "DENY"
        and r.getheader("referrer-policy") == "no-referrer"
        and r.getheader("cache-control") == "no-store"
    )


def test_bad_ids_are_422_and_every_error_carries_the_security_headers(edge_study):
    server, db = edge_study
    c = enter(server.base, db, "prober")
    task = c.api("GET", "/api/task")[1]["task"]["id"]
    for bad_id in (2**63, 10**30, -(2**63) - 1, 0):
        status, j = c.api("POST", "/api/answer", {"task": bad_id, "labels": ["a"]})
        assert status == 422 and j["error"].startswith("task:"), (bad_id, j)
    for path in ("/ref/0/" + "9" * 5000, "/ref/" + "9" * 5000 + "/0"):  # longer than int() takes
        assert c.request("GET", path)[0] == 404
    seen = {}
    for who, method, path, body, headers in [
        (Client(server.base), "GET", "/api/task", None, {}),  # 401
        (c, "POST", "/api/undo", None, {"X-CSRF-Token": "forged"}),  # 403
        (c, "GET", "/no/such/page", None, {}),  # 404
        (c, "DELETE", "/api/task", None, {}),  # 405
        (c, "POST", "/api/answer", b"{}", {"X-CSRF-Token": c.csrf}),  # 422
        (c, "POST", "/api/answer", b"x" * (64 * 1024 + 1), {"X-CSRF-Token": c.csrf}),  # 413
    ]:
        status, r, _ = who.request(method, path, body, headers)
        seen[status] = _has_security_headers(r)
    # A 500: the study loses a setting underneath the server.
    with closing(sqlite3.connect(db)) as con, con:
        labels = con.execute("SELECT value FROM meta WHERE key='labels'").fetchone()[0]
        con.execute("DELETE FROM meta WHERE key='labels'")
    try:
        status, r, data = c.request(
            "POST",
            "/api/answer",
            json.dumps({"task": task, "labels": ["a"]}).encode(),
            {"X-CSRF-Token": c.csrf, "Content-Type": "application/json"},
        )
        seen[status] = _has_security_headers(r)
        assert json.loads(data)["error"].startswith("the server failed") and b"KeyError" not in data
    finally:
        with closing(sqlite3.connect(db)) as con, con:
            con.execute("INSERT INTO meta VALUES ('labels', ?)", (labels,))
    assert seen == {401: True, 403: True, 404: True, 405: True, 422: True, 413: True, 500: True}


def _raw(port: int, head: bytes, parts: list[bytes]) -> tuple[int, bytes]:
    """Send a request's head and body parts on a fresh connection; the status and head of the reply (10 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        try:
            for p in parts:
                s.sendall(p)
        except OSError:  # the server answered and closed before taking it all
            pass
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:  # the reply came before the reset, or not at all
                break
            if not chunk:
                break
            data += chunk
    return int(data.split()[1]), data


def test_bodies_over_the_limit_are_refused_before_they_are_read(edge_study):
    from unsee.annotate_app.server import MAX_BODY

    server, db = edge_study
    c = enter(server.base, db, "uploader")
    auth = f"Host: 127.0.0.1\r\nCookie: unsee_session={c.cookie}\r\nX-CSRF-Token: {c.csrf}\r\n"
    kib = b"x" * 1024
    chunked = [b"400\r\n" + kib + b"\r\n"] * (MAX_BODY // 1024 + 16)  # no last chunk: the body never ends
    boundary = "b0undary"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for path, kind, head_extra, parts in [
        # announced: refused by Content-Length, with (50 MB - 1 KiB) never sent
        ("/api/answer", "application/json", "Content-Length: 50000000\r\n", [kib]),
        ("/consent", f"multipart/form-data; boundary={boundary}", "Content-Length: 50000000\r\n", [part, kib]),
        # unannounced (chunked): refused once more than MAX_BODY came in, though the body has not ended
        ("/api/answer", "application/json", "Transfer-Encoding: chunked\r\n", chunked),
        (
            "/consent",
            f"multipart/form-data; boundary={boundary}",
            "Transfer-Encoding: chunked\r\n",
            [f"{len(part):x}\r\n".encode() + part + b"\r\n", *chunked],
        ),
    ]:
        head = f"POST {path} HTTP/1.1\r\n{auth}Content-Type: {kind}\r\n{head_extra}\r\n".encode()
        status, reply = _raw(server.port, head, parts)
        assert status == 413 and b"default-src 'none'" in reply, (path, head_extra, reply[:300])
    # Within the limit, the same session answers as usual.
    task = c.api("GET", "/api/task")[1]["task"]["id"]
    assert c.api("POST", "/api/answer", {"task": task, "labels": ["b"]})[0] == 200


def test_undo_reaches_the_last_answer_only_and_the_export_keeps_every_answer(edge_study, tmp_path):
    server, db = edge_study
    c = enter(server.base, db, "undoer")
    given = []
    for labels in (["a"], ["b"], ["c"]):
        task = c.api("GET", "/api/task")[1]["task"]
        assert c.api("POST", "/api/answer", {"task": task["id"], "labels": labels})[0] == 200
        given.append((task["id"], task["images"][0]["id"], frozenset(labels)))

    def exported() -> list:
        cli_ok("annotate", "export", "--db", str(db), "--out", str(tmp_path / "fb.jsonl"))
        return sorted(
            (j.image, j.labels) for j in load_feedback(tmp_path / "fb.jsonl").binary if j.annotator == "undoer"
        )

    status, j = c.api("POST", "/api/undo")
    assert status == 200 and j["task"]["id"] == given[-1][0] and j["previous"] == {"labels": ["c"]}
    assert j["progress"]["mine"] == 3  # the reopened answer stands until replaced
    for _ in range(20):  # pressing on reaches nothing further back
        status, j = c.api("POST", "/api/undo")
        assert status == 409 and "only your last answer" in j["error"]
    assert exported() == sorted((image, labels) for _, image, labels in given)
    assert c.api("GET", "/api/task")[1]["task"]["id"] == given[-1][0]  # it is the current task
    assert c.api("POST", "/api/answer", {"task": given[-1][0], "labels": ["a", "b"]})[0] == 200
    want = sorted([(image, labels) for _, image, labels in given[:2]] + [(given[-1][1], frozenset({"a", "b"}))])
    assert exported() == want
    assert c.api("POST", "/api/undo")[0] == 200  # the new last answer can be reopened, once
    assert c.api("POST", "/api/undo")[0] == 409
    assert exported() == want


def test_a_lost_hold_answers_409_with_the_next_task(edge_study):
    server, db = edge_study
    slow, quick = enter(server.base, db, "slow"), enter(server.base, db, "quick")
    task = slow.api("GET", "/api/task")[1]["task"]["id"]
    with closing(sqlite3.connect(db)) as con, con:  # slow's hold runs out (as the clock would make it)
        con.execute("UPDATE assignments SET leased_until=0 WHERE task=?", (task,))
    assert quick.api("GET", "/api/task")[1]["task"]["id"] == task  # the place goes to quick (--per-image 1)
    status, j = slow.api("POST", "/api/answer", {"task": task, "labels": ["a"]})
    assert status == 409 and "here is a new one" in j["error"], j
    assert j["task"] and j["task"]["id"] != task and j["progress"]["mine"] == 0
    assert slow.api("GET", "/api/task")[1]["task"]["id"] == j["task"]["id"]  # held for slow


def test_invite_links_expire_and_reuse_adds_no_session(edge_study):
    from unsee.annotate_app.db import MAX_SESSIONS

    server, db = edge_study
    token = Store.open(db).invite("returning")

    def sessions() -> int:
        with closing(sqlite3.connect(db)) as con:
            return con.execute(
                "SELECT COUNT(*) FROM sessions s JOIN annotators a ON a.id = s.annotator WHERE a.name='returning'"
            ).fetchone()[0]

    browser = Client(server.base)
    for _ in range(5):  # the same browser again and again: its session carries on
        assert browser.join(token) == 303
    assert sessions() == 1
    others = [Client(server.base) for _ in range(MAX_SESSIONS + 3)]
    for other in others:  # new browsers: the oldest sessions beyond MAX_SESSIONS are signed out
        assert other.join(token) == 303
    assert sessions() == MAX_SESSIONS
    assert browser.request("GET", "/consent")[0] == 401 and others[-1].request("GET", "/consent")[0] == 200
    # 15 days on (links open sessions for 14 days by default): the link is refused, open sessions keep working.
    with closing(sqlite3.connect(db)) as con, con:
        con.execute("UPDATE annotators SET invited='2000-01-01T00:00:00Z' WHERE name='returning'")
    status, _, page = Client(server.base).request("GET", f"/join/{token}")
    assert status == 403 and b"expired on 2000-01-15" in page
    assert others[-1].request("GET", "/consent")[0] == 200 and others[-1].join(token) == 303
    # An expired link is replaced without revoking anyone.
    fresh = cli_ok("annotate", "invite", "--db", str(db), "--name", "returning").splitlines()[0].rsplit("/", 1)[1]
    assert Client(server.base).join(fresh) == 303 and others[-1].request("GET", "/consent")[0] == 200


def test_session_cookie_is_secure_over_https(edge_study, tmp_path, own_servers):
    server, db = edge_study
    token = Store.open(db).invite("secure")
    _, r, _ = Client(server.base).request("GET", f"/join/{token}")
    assert "unsee_session=" in r.getheader("set-cookie") and "secure" not in r.getheader("set-cookie").lower()
    _, r, _ = Client(server.base).request(
        "GET", f"/join/{token}", headers={"X-Forwarded-Proto": "https"}
    )  # a local proxy
    assert "unsee_session=" in r.getheader("set-cookie") and "; secure" in r.getheader("set-cookie").lower()
    # Served behind https://annotate.example.org: Secure on every join, and invites point there.
    images = make_set(tmp_path / "set", 3)
    public = own_servers(
        tmp_path / "server.log",
        "--images",
        str(images),
        "--db",
        str(tmp_path / "s.db"),
        "--labels",
        "a",
        "--url",
        "https://annotate.example.org/",
    )
    link = cli_ok("annotate", "invite", "--db", str(tmp_path / "s.db"), "--name", "ann").splitlines()[0]
    assert link.startswith("https://annotate.example.org/join/")
    _, r, _ = Client(public.base).request("GET", f"/join/{link.rsplit('/', 1)[1]}")
    assert "; secure" in r.getheader("set-cookie").lower()
    assert "--url must be" in _refused(
        "annotate",
        "serve",
        "--images",
        str(images),
        "--db",
        str(tmp_path / "s.db"),
        "--labels",
        "a",
        "--url",
        "annotate.example.org",
    )


def test_error_pages_link_only_what_they_can_load(edge_study):
    server, _ = edge_study
    anon = Client(server.base)
    for path in ("/join/not-a-token", "/", "/no/such/page"):
        status, _, page = anon.request("GET", path)
        assert status in (401, 404) and b"<h1>" in page
        links = re.findall(rb'href="([^"]+)"', page)
        assert links, page
        for href in links:
            status, r, _ = anon.request("GET", href.decode())
            assert status == 200 and r.getheader("content-type").startswith("text/css"), href
    assert anon.request("GET", "/static/app.js")[0] == 401  # the script still needs a session


def test_references_for_labels_with_a_slash_and_no_links_out_of_the_folder(tmp_path, own_servers):
    images = make_set(tmp_path / "set", 4)
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(images / "00000-000.png", refs / "shared.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(images / "00001-000.png", outside / "secret.png")
    (refs / "leak.png").symlink_to(outside / "secret.png")
    (refs / "c").symlink_to(outside, target_is_directory=True)  # label c's own folder, but elsewhere
    db = tmp_path / "study.db"
    server = own_servers(
        tmp_path / "server.log",
        "--images",
        str(images),
        "--db",
        str(db),
        "--labels",
        "a/b,c",
        "--kind",
        "rank",
        "--group-size",
        "2",
        "--per-image",
        "1",
        "--references",
        str(refs),
    )
    c = enter(server.base, db, "ranker")
    shared = (refs / "shared.png").read_bytes()
    seen = set()
    status, j = c.api("GET", "/api/task")
    while j["task"]:
        t = j["task"]
        seen.add(t["concept"])
        assert len(t["references"]) == 1, t  # shared.png only: neither link is followed
        status, _, data = c.request("GET", t["references"][0])
        assert status == 200 and data == shared, t["references"]
        status, j = c.api("POST", "/api/answer", {"task": t["id"], "order": [im["id"] for im in t["images"]]})
        assert status == 200
    assert seen == {"a/b", "c"}


# ---------------------------------------------------------------- the browser
def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed for the browser test: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(
        executable_path=path,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )
    return pw, browser


@pytest.fixture(scope="module")
def rank_study(tmp_path_factory, servers):
    """Toy-world renders, half with a skull, flagged by the oracle at start; two reference images."""
    from unsee.toyworld.render import render_many
    from unsee.toyworld.world import random_scene

    d = tmp_path_factory.mktemp("rank")
    rng = np.random.default_rng(0)
    scenes = [
        dataclasses.replace(random_scene(rng), extra="skull" if i % 2 else "none", style="none") for i in range(6)
    ]
    x = torch.from_numpy(render_many(scenes)).permute(0, 3, 1, 2).float() / 255
    images = write_image_set(d / "set", x, [f"scene {i}" for i in range(6)])
    refs = d / "refs" / "skull"
    refs.mkdir(parents=True)
    for k in (1, 3):
        shutil.copy(images / f"{k:05d}-000.png", refs / f"example-{k}.png")
    db = d / "study.db"
    server = servers(
        d / "server.log",
        "--images",
        str(images),
        "--db",
        str(db),
        "--labels",
        "skull,kelvo",
        "--kind",
        "rank",
        "--group-size",
        "3",
        "--per-image",
        "2",
        "--detector",
        "oracle",
        "--references",
        str(d / "refs"),
    )
    return server, db, images


def test_oracle_flags_are_stored_per_image(rank_study):
    from unsee.detectors import make_detector

    _, db, images = rank_study
    detect, info = make_detector("oracle")
    scores = detect(ImageSet.load(images).load_images())
    want = ((scores["skull"] >= info.threshold) | (scores["kelvo"] >= info.threshold)).tolist()
    flagged = Store.open(db).flagged()
    assert [flagged[i] for i in ImageSet.load(images).ids] == want
    assert any(want) and not all(want)  # the browser test below sees both kinds


def test_rank_answers_refuse_ties_and_strangers(rank_study):
    server, db, _ = rank_study
    c = enter(server.base, db, "ranker")
    task = c.api("GET", "/api/task")[1]["task"]
    ids = [im["id"] for im in task["images"]]
    assert task["kind"] == "rank" and 2 <= len(ids) <= 3 and task["concept"] in ("skull", "kelvo")
    for order, says in [
        ([ids[0], ids[0], *ids[2:]], "ties are refused"),
        (ids[:-1], "exactly this group"),
        ([*ids[:-1], "00099-000"], "exactly this group"),
    ]:
        status, j = c.api("POST", "/api/answer", {"task": task["id"], "order": order})
        assert status == 422 and says in j["error"], j
    assert c.api("POST", "/api/answer", {"task": task["id"], "order": ids[::-1]})[0] == 200


def test_browser_consent_binary_and_rank_by_mouse_and_keyboard_undo_and_export(binary_study, rank_study, tmp_path):
    from playwright.sync_api import expect  # its waits run in Playwright's own world: the page's CSP stays on

    pw, browser = _chromium()
    try:
        # ---- binary: consent, then answer by clicking, by keys, and undo
        server, db, images = binary_study
        page = browser.new_context().new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.base}/join/{Store.open(db).invite('carol')}")
        assert page.url.endswith("/consent") and "Content warning" in page.inner_text("main")
        page.click("#start")  # not ticked: the browser keeps us on the consent page
        assert page.url.endswith("/consent")
        page.check("#agree")
        page.click("#start")
        page.wait_for_url(f"{server.base}/")
        done = page.locator("#progress-text")

        def shown() -> str:
            page.wait_for_selector("#task figure img")
            return page.get_attribute("#task figure img", "data-id")

        first = shown()
        page.click("label[for=label-0]")
        page.click("#submit")
        expect(done).to_contain_text("you: 1 answered")
        second = shown()
        assert second != first
        page.keyboard.press("2")
        page.keyboard.press("3")
        page.keyboard.press("Enter")
        expect(done).to_contain_text("you: 2 answered")
        third = shown()
        page.keyboard.press("n")
        page.keyboard.press("Enter")
        expect(done).to_contain_text("you: 3 answered")
        message = page.locator("#message")
        page.keyboard.press(
            "u"
        )  # undo: the third image is back, with its answer (none) filled in; it stands till resubmitted
        expect(message).to_contain_text("open again")
        assert shown() == third and page.get_attribute("#none", "class") == "chosen"
        expect(done).to_contain_text("you: 3 answered")
        page.keyboard.press("u")  # undo reaches the last answer only, and says so
        expect(message).to_contain_text("only your last answer")
        assert shown() == third
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        expect(message).to_have_text("Saved.")
        assert float(page.get_attribute("#bar", "value")) >= 3 and "you: 3 answered" in done.inner_text()
        assert not errors, errors

        out = tmp_path / "binary.jsonl"
        cli_ok("annotate", "export", "--db", str(db), "--out", str(out))
        fb = load_feedback(out, image_ids=ImageSet.load(images).ids)
        carol = [(j.image, j.labels) for j in fb.binary if j.annotator == "carol"]
        assert carol == [(first, {"a"}), (second, {"b", "c"}), (third, {"a"})]

        # ---- rank: flagged images start blurred; order by clicks, then by keys; undo; references
        server, db, images = rank_study
        flagged = Store.open(db).flagged()
        page = browser.new_context().new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.base}/join/{Store.open(db).invite('dave')}")
        page.check("#agree")
        page.click("#start")
        page.wait_for_url(f"{server.base}/")
        seen_blurred = []

        def group() -> list[str]:
            page.wait_for_selector("#task .group figure img")
            ids = [e.get_attribute("data-id") for e in page.query_selector_all("#task .group figure img")]
            blurred = [
                "blurred" in (e.get_attribute("class") or "")
                for e in page.query_selector_all("#task .group figure img")
            ]
            assert blurred == [flagged[i] for i in ids]
            seen_blurred.extend(blurred)
            return ids

        def wait_mine(n: int) -> None:
            expect(page.locator("#progress-text")).to_contain_text(f"you: {n} answered")

        g1 = group()  # 6 images in groups of 3: every group has 3
        assert len(g1) == 3
        for k in (2, 0):  # click the third image, then the first; the last place fills itself
            if flagged[g1[k]]:
                page.query_selector_all("#task .group figure")[k].query_selector("button.reveal").click()
                assert "blurred" not in page.query_selector_all("#task .group figure img")[k].get_attribute("class")
            page.query_selector_all("#task .group figure")[k].click()
        assert page.inner_text("#task .group figure:nth-child(2) .place") == "#3"
        page.click("#submit")
        wait_mine(1)
        g2 = group()
        page.keyboard.press("2")
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        wait_mine(2)
        page.keyboard.press("u")  # undo: the group is back with its order filled in
        expect(page.locator("#message")).to_contain_text("open again")
        wait_mine(2)
        assert group() == g2 and page.inner_text("#task .group figure:nth-child(2) .place") == "#1"
        page.keyboard.press("Backspace")
        page.keyboard.press("Backspace")  # back to just the first pick
        page.keyboard.press("3")
        page.keyboard.press("Enter")
        expect(page.locator("#message")).to_have_text("Saved.")
        wait_mine(2)
        group()
        refs = page.query_selector_all("#task .references img")
        concept = page.inner_text("#task .question strong")
        assert len(refs) == (2 if concept == "skull" else 0)
        assert all("blurred" in r.get_attribute("class") for r in refs)
        assert any(seen_blurred) and not errors, errors  # 3 of the 4 groups cover a concept's 6 images

        out = tmp_path / "rank.jsonl"
        cli_ok("annotate", "export", "--db", str(db), "--out", str(out))
        fb = load_feedback(out, image_ids=ImageSet.load(images).ids)
        dave = [list(j.images) for j in fb.ranks if j.annotator == "dave"]
        assert dave == [[g1[2], g1[0], g1[1]], [g2[1], g2[2], g2[0]]]
        assert json.loads(out.read_text().splitlines()[0]) == {
            "kind": "meta",
            "version": 1,
            "labels": ["skull", "kelvo"],
            "images": str(images.resolve()),
        }
    finally:
        browser.close()
        pw.stop()


def test_browser_another_site_cannot_switch_who_is_signed_in(binary_study):
    from playwright.sync_api import expect

    server, db, _ = binary_study
    store = Store.open(db)
    vic, mallory = store.invite("vic"), store.invite("mallory")
    join = f"{server.base}/join/{mallory}"

    def sessions(name: str) -> int:
        with closing(sqlite3.connect(db)) as con:
            return con.execute(
                "SELECT COUNT(*) FROM sessions s JOIN annotators a ON a.id = s.annotator WHERE a.name=?", (name,)
            ).fetchone()[0]

    # The pages another site would use: one sends the browser to mallory's link, one posts to it.
    evil = {
        "/nav": f"<script>location.href = {json.dumps(join)};</script>",
        "/post": f'<form id="f" method="post" action="{join}"></form><script>document.getElementById("f").submit()</script>',
    }
    pw, browser = _chromium()
    try:
        page = browser.new_context().new_page()
        page.route(
            "http://evil.test/**",
            lambda route: route.fulfill(
                status=200, content_type="text/html", body=evil[route.request.url.removeprefix("http://evil.test")]
            ),
        )
        page.goto(f"{server.base}/join/{vic}")
        page.check("#agree")
        page.click("#start")
        page.wait_for_url(f"{server.base}/")
        assert page.inner_text(".who") == "vic"
        # 1. Sent to mallory's link by another site: the browser is asked, and stays vic's.
        page.goto("http://evil.test/nav")
        page.wait_for_url(join)
        expect(page.locator("h1")).to_have_text("Switch to mallory?")
        assert "signed in as vic" in page.inner_text("main")
        assert sessions("mallory") == 0
        page.goto(f"{server.base}/")
        assert page.inner_text(".who") == "vic"
        # 2. A post from another site carries no cookie and no token: refused.
        page.goto("http://evil.test/post")
        page.wait_for_url(join)
        expect(page.locator("main")).to_contain_text("no session to switch from")
        page.goto(f"{server.base}/")
        assert page.inner_text(".who") == "vic" and sessions("mallory") == 0
        # 3. Vic's own link again: straight back, no new session.
        page.goto(f"{server.base}/join/{vic}")
        page.wait_for_url(f"{server.base}/")
        assert page.inner_text(".who") == "vic" and sessions("vic") == 1
        # 4. The person at the keyboard confirms: now mallory, and vic's session of this browser is gone.
        page.goto(join)
        page.click("#switch")
        page.wait_for_url(f"{server.base}/consent")
        assert "mallory" in page.inner_text("h1") and sessions("vic") == 0 and sessions("mallory") == 1
    finally:
        browser.close()
        pw.stop()
    # Without a browser: a post from vic's own session, but without or with a wrong token, switches nothing.
    c = enter(server.base, db, "walt")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body in (b"", urlencode({"csrf": "forged"}).encode()):
        status, r, _ = c.request("POST", f"/join/{Store.open(db).invite(f'target-{len(body)}')}", body, form)
        assert status == 403 and r.getheader("set-cookie") is None
    assert c.api("GET", "/api/task")[0] == 200 and sessions("walt") == 1
