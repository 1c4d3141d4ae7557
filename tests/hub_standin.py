"""A local stand-in for the Hugging Face Hub's HTTP API: the calls a push makes (create the repository, check the model
card's metadata, ask each file's upload mode, commit), answered on 127.0.0.1 so that huggingface_hub's own client runs unchanged
against it (HF_ENDPOINT). Every file is answered "regular" (sent inside the commit), so no LFS or Xet storage is
needed; what each commit held is kept in `repos` and written under `root/REPO/` for the test to read.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER = "standin-user"


class HubStandIn:
    def __init__(self, root: str):
        self.root = root
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "commits": [{"summary", "files": {path: bytes}}]}
        self.validated: list[str] = []  # model cards checked
        self.calls: list[tuple[str, str, str | None]] = []  # (method, path, authorization header)
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                standin.calls.append(("POST", self.path, self.headers.get("authorization")))
                if not (self.headers.get("authorization") or "").startswith("Bearer "):
                    return self._answer(401, {"error": "no token"})
                status, answer = standin.handle(self.path, body)
                self._answer(status, answer)

            def do_GET(self):  # noqa: N802  (repository information: what create_commit asks when nothing changed)
                standin.calls.append(("GET", self.path, self.headers.get("authorization")))
                match = re.fullmatch(r"/api/models/(.+?/.+?)/revision/.*", self.path)
                if match and match.group(1) in standin.repos:
                    commits = standin.repos[match.group(1)]["commits"]
                    return self._answer(200, {"id": match.group(1), "sha": f"{len(commits):040x}", "siblings": []})
                self._answer(404, {"error": f"the stand-in does not serve {self.path}"})

            def _answer(self, status, answer):
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str, body: bytes):
        if path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request.get('organization') or USER}/{request['name']}"
            self.repos.setdefault(repo, {"private": bool(request.get("private")), "commits": []})
            return 200, {"url": f"{self.endpoint}/{repo}", "name": repo, "id": repo}
        if path == "/api/validate-yaml":  # the model card's metadata, checked before the commit (as the hub does)
            import yaml

            content = json.loads(body)["content"]
            front = content.split("---")[1] if content.startswith("---") else ""
            try:
                assert isinstance(yaml.safe_load(front), dict)
            except (yaml.YAMLError, AssertionError):
                return 400, {"error": "the model card's YAML metadata does not parse"}
            self.validated.append(content)
            return 200, {"errors": [], "warnings": []}
        match = re.fullmatch(r"/api/models/(.+?/.+?)/(preupload|commit)/([^/?]+).*", path)
        if not match or match.group(1) not in self.repos:
            return 404, {"error": f"no such repository or call: {path}"}
        repo, call = match.group(1), match.group(2)
        if call == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        commit = {"summary": None, "files": {}}
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                commit["summary"] = item["value"]["summary"]
            elif item["key"] == "file":
                value = item["value"]
                commit["files"][value["path"]] = base64.b64decode(value["content"])
                target = os.path.join(self.root, repo, value["path"])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    f.write(commit["files"][value["path"]])
        self.repos[repo]["commits"].append(commit)
        oid = f"{len(self.repos[repo]['commits']):040x}"
        return 200, {"commitUrl": f"{self.endpoint}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
