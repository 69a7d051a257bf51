"""A Hugging Face hub stand-in on localhost: serves one model folder the way the hub API does,
so the download path (`huggingface_hub.snapshot_download`) is tested without a network."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve_model(folder: Path, repo_id: str) -> tuple[ThreadingHTTPServer, list[str]]:
    """Start a server for `folder` as `repo_id`; returns it (port: `server.server_port`) and
    the list of request paths it receives. Endpoints: model info, file tree, file resolve."""
    files = {p.name: p for p in Path(folder).iterdir() if p.is_file()}
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _json(self, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, with_body: bool) -> None:
            name = self.path.split("?")[0].split("/resolve/", 1)[1].split("/", 1)[1]
            path = files.get(name)
            if path is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if with_body:
                self.wfile.write(data)

        def do_HEAD(self):
            requests.append(self.path)
            if "/resolve/" in self.path:
                self._file(False)
            else:
                self.send_response(404)
                self.end_headers()

        def do_GET(self):
            requests.append(self.path)
            if self.path.startswith(f"/api/models/{repo_id}/tree/"):
                self._json(
                    [
                        {
                            "type": "file",
                            "path": n,
                            "size": p.stat().st_size,
                            "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                        }
                        for n, p in files.items()
                    ]
                )
            elif self.path.startswith(f"/api/models/{repo_id}"):
                self._json(
                    {"id": repo_id, "modelId": repo_id, "sha": commit, "siblings": [{"rfilename": n} for n in files]}
                )
            elif "/resolve/" in self.path:
                self._file(True)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, requests
