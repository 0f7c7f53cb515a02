"""The annotation web app: people judge an image set and the study exports `feedback.jsonl`.

A safety team runs one server for a study (`unsee annotate serve`), invites annotators with
personal links (`invite` / `revoke`), watches progress and agreement (`status`) and exports
the same feedback file the simulated annotators write (`export`).

- `config`: the commands' configs (no web imports, so `unsee --help` stays fast);
- `db`: the SQLite study database: annotators, tasks, leases, answers;
- `server`: the FastAPI app, its start-up checks and the uvicorn runner;
- `pages` + `static/`: server-rendered HTML and the one script behind the task page;
- `agreement`: Krippendorff's alpha.

Needs the `annotate` extra: `pip install unsee[annotate]`.
"""

from unsee.annotate_app.config import ExportConfig, InviteConfig, RevokeConfig, ServeConfig, StatusConfig

__all__ = ["ExportConfig", "InviteConfig", "RevokeConfig", "ServeConfig", "StatusConfig"]
