"""gs:// end to end: ``python -m pipeline`` reads from and writes to a Cloud Storage emulator.

``gcp-storage-emulator`` serves the JSON API on 127.0.0.1; ``STORAGE_EMULATOR_HOST`` in the
subprocess's environment points google-cloud-storage (and so Beam's GcsIO) at it. Beam asks for
Application Default Credentials first; a tiny fake GCE metadata server (``GCE_METADATA_HOST``)
answers with a dummy token, as the metadata server does on a Dataflow worker, so that no real
credentials are needed and Beam does not spend half a minute retrying the lookup.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import stop_process

pytest.importorskip("gcp_storage_emulator", reason="pip install gcp-storage-emulator (test extra)")

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

REPO = Path(__file__).resolve().parent.parent
TICKETS = REPO / "examples" / "tickets.jsonl"
BUCKET = "tf-bucket"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _MetadataHandler(http.server.BaseHTTPRequestHandler):
    """Just enough of the GCE metadata server for google.auth.default()."""

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.endswith("/token"):
            body = json.dumps({"access_token": "fake-emulator-token", "expires_in": 3600,
                               "token_type": "Bearer"})
        elif path.endswith("/project/project-id"):
            body = "test"
        elif "/service-accounts/default" in path:
            body = json.dumps({"email": "worker@test.iam.gserviceaccount.com",
                               "aliases": ["default"], "scopes": ["cloud-platform"]})
        else:
            body = ""
        data = body.encode()
        self.send_response(200)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/json" if body.startswith("{") else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def metadata_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MetadataHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
             "--port", str(port), "--in-memory", "--default-bucket", BUCKET],
            stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"gcp-storage-emulator did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    yield url
    stop_process(proc)


@pytest.fixture(scope="module")
def client(emulator):
    return storage.Client(project="test", credentials=AnonymousCredentials(),
                          client_options=ClientOptions(api_endpoint=emulator))


def _env(emulator: str, metadata: str) -> dict:
    env = dict(os.environ)
    env.update({
        "STORAGE_EMULATOR_HOST": emulator,
        "GCE_METADATA_HOST": metadata,
        "GCE_METADATA_IP": metadata,
        "GOOGLE_CLOUD_PROJECT": "test",
        "PYTHONUNBUFFERED": "1",
    })
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "OPENAI_API_KEY"):
        env.pop(name, None)
    return env


def _run_pipeline(args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(check=False, args=[sys.executable, "-m", "pipeline", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=240)


def _read_lines(client, prefix: str) -> list:
    lines = []
    for blob in client.list_blobs(BUCKET, prefix=prefix):
        lines.extend(line for line in blob.download_as_bytes().decode().splitlines() if line)
    return lines


@pytest.mark.e2e
def test_pipeline_reads_and_writes_gcs(emulator, metadata_server, client, tmp_path):
    client.bucket(BUCKET).blob("in/tickets.jsonl").upload_from_filename(str(TICKETS))
    input_ids = [json.loads(line)["id"] for line in TICKETS.read_text().splitlines() if line]
    env = _env(emulator, metadata_server)

    started = time.monotonic()
    proc = _run_pipeline(["--input", f"gs://{BUCKET}/in/tickets.jsonl",
                          "--output", f"gs://{BUCKET}/out", "--simulate", "--project", "test"],
                         env, tmp_path)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ledger" in proc.stdout and "balanced" in proc.stdout

    names = sorted(b.name for b in client.list_blobs(BUCKET, prefix="out/"))
    assert "out/summary.json" in names
    assert any(n.startswith("out/results-") and n.endswith(".jsonl") for n in names), names
    assert any(n.startswith("out/dead_letter-") for n in names), names

    results = [json.loads(line) for line in _read_lines(client, "out/results-")]
    dead = _read_lines(client, "out/dead_letter-")
    summary = json.loads(client.bucket(BUCKET).blob("out/summary.json").download_as_bytes())
    assert len(input_ids) == 300
    assert len(results) == 300 and not dead
    assert sorted(r["id"] for r in results) == sorted(input_ids)
    assert all(r["response"] for r in results)
    assert summary["ledger_balanced"] is True
    assert summary["read"] == summary["succeeded"] == summary["written_results"] == 300
    assert summary["dead_lettered"] == summary["written_dead_letters"] == 0
    assert summary["output"] == f"gs://{BUCKET}/out"
    assert summary["simulator"]["successful_completions"] == 300
    # No credentials lookup storm: the fake metadata server answers at once.
    assert elapsed < 120, f"took {elapsed:.0f}s"

    # Preflight works on gs:// too: the same output is refused without --overwrite...
    again = _run_pipeline(["--input", f"gs://{BUCKET}/in/tickets.jsonl",
                           "--output", f"gs://{BUCKET}/out", "--simulate", "--project", "test"],
                          env, tmp_path)
    assert again.returncode == 2, again.stderr[-2000:]
    assert "--overwrite" in again.stderr
    # ...and a pattern that matches nothing is a usage error, not a failed job.
    missing = _run_pipeline(["--input", f"gs://{BUCKET}/nope/*.jsonl",
                             "--output", f"gs://{BUCKET}/out2", "--simulate", "--project", "test"],
                            env, tmp_path)
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert "matches no file" in missing.stderr
