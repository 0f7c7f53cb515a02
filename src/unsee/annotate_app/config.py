"""Configs of the `unsee annotate` web-app commands (serve, invite, revoke, status, export).

Kept free of FastAPI imports: the CLI builds its flags from these at import time.
"""

from __future__ import annotations

import dataclasses
from typing import Literal
from urllib.parse import urlsplit

from unsee.config import field
from unsee.errors import UnseeError

MAX_GROUP = 5  # rank groups larger than this are hard to order reliably


def parse_labels(values: tuple[str, ...] | str) -> tuple[str, ...]:
    """`("nudity,gore", "style-x")` -> `("nudity", "gore", "style-x")`; empty or repeated names are refused."""
    values = (values,) if isinstance(values, str) else values
    labels = tuple(x.strip() for v in values for x in v.split(","))
    if not any(labels):
        raise UnseeError('--labels is empty; name what annotators check, e.g. --labels "nudity,gore,style-x"')
    if "" in labels:
        raise UnseeError(f"--labels has an empty name in {','.join(labels)!r}; separate names with single commas")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UnseeError(f"--labels names {', '.join(dup)} twice; give each label once")
    bad = [x for x in labels if len(x) > 64 or not x.isprintable()]
    if bad:
        raise UnseeError(f"label {bad[0]!r} must be printable and at most 64 characters")
    return labels


@dataclasses.dataclass
class ServeConfig:
    images: str = field(help="Image set folder (manifest.jsonl + PNGs, made by `unsee generate`).")
    db: str = field(help="SQLite database of the study; made on first start, resumed after.")
    labels: tuple[str, ...] = field(help='Labels annotators check, comma-separated: "nudity,gore,style-x".')
    kind: Literal["binary", "rank"] = field(
        "binary", help="binary: check labels per image; rank: order groups by a label."
    )
    per_image: int = field(
        3,
        help="Annotators who judge each image (each at most once); fixed once the study "
        "exists unless --change-settings.",
    )
    group_size: int = field(5, help="rank: images per group (2-5).")
    references: str | None = field(
        None, help="rank: folder of example images shown beside each group (FOLDER/<label>/ holds one label's own)."
    )
    detector: Literal["none", "oracle", "nudenet"] = field(
        "none", help="Flag images at start; flagged ones start blurred."
    )
    consent: str | None = field(None, help="Text file with your study's consent text (default: a generic one).")
    host: str = field("127.0.0.1", help="Address to bind; other than 127.0.0.1 exposes the study to the network.")
    port: int = field(8000, help="Port to listen on.")
    url: str | None = field(
        None,
        help="Address annotators reach the server at, e.g. https://annotate.example.org "
        "behind an HTTPS proxy (default: http://HOST:PORT); `invite` prints links to "
        "it, and an https address marks the session cookie Secure.",
    )
    invite_days: int = field(
        14, help="Days an invite link can open new sessions, counted from `invite`; sessions it opened keep working."
    )
    change_settings: bool = field(False, help="Let --per-image differ from what the existing study was started with.")
    lease: int = field(900, help="Seconds a task handed to an annotator is held for them before others may get it.")
    seed: int = field(0, help="Seed of the task order and of the rank groups.")

    def __post_init__(self) -> None:
        self.labels = parse_labels(self.labels)
        if self.per_image < 1:
            raise UnseeError(f"--per-image must be >= 1, got {self.per_image}")
        if not 2 <= self.group_size <= MAX_GROUP:
            raise UnseeError(f"--group-size must be between 2 and {MAX_GROUP}, got {self.group_size}")
        if not 1 <= self.port <= 65535:
            raise UnseeError(f"--port must be between 1 and 65535, got {self.port}")
        if self.lease < 10:
            raise UnseeError(f"--lease must be >= 10 seconds, got {self.lease}")
        if self.invite_days < 1:
            raise UnseeError(f"--invite-days must be >= 1, got {self.invite_days}")
        if self.url is not None:
            self.url = self.url.rstrip("/")
            parts = urlsplit(self.url)
            try:
                parts.port  # noqa: B018  (raises on a bad port)
                ok = (
                    parts.scheme in ("http", "https")
                    and parts.hostname
                    and not (parts.path or parts.query or parts.fragment)
                )
            except ValueError:
                ok = False
            if not ok:  # the app's routes are absolute, so it cannot sit under a path
                raise UnseeError(
                    "--url must be an http:// or https:// address without a path, such as "
                    f"https://annotate.example.org; got {self.url!r}"
                )


@dataclasses.dataclass
class InviteConfig:
    db: str = field(help="The study's database (made by `unsee annotate serve`).")
    name: str = field(help="Annotator name, as it appears in status and in the exported feedback.")
    url: str | None = field(None, help="Address annotators reach the server at (default: where it last served).")


@dataclasses.dataclass
class RevokeConfig:
    db: str = field(help="The study's database.")
    name: str = field(help="Annotator whose link stops working (their answers are kept).")


@dataclasses.dataclass
class StatusConfig:
    db: str = field(help="The study's database.")


@dataclasses.dataclass
class ExportConfig:
    db: str = field(help="The study's database.")
    out: str = field(help="Feedback file to write (feedback.jsonl); replaced atomically.")
