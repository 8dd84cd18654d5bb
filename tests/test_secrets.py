"""transforms.secrets: Secret Manager names, values and errors, with a fake client (no network)."""

from __future__ import annotations

import google_crc32c
import pytest

from transforms import secrets

NAME = "projects/my-project/secrets/openai-key/versions/latest"
VALUE = "sk-test-0123456789abcdef"


class _Payload:
    def __init__(self, data, crc=None):
        self.data = data
        self.data_crc32c = crc


class _Response:
    def __init__(self, payload):
        self.payload = payload


class _Transport:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


class FakeClient:
    """Records calls; answers with ``payload`` or raises ``error``."""

    def __init__(self, payload=None, error=None):
        self.payload = payload
        self.error = error
        self.requests = []
        self.transport = _Transport()

    def access_secret_version(self, request, timeout=None):
        self.requests.append((request, timeout))
        if self.error is not None:
            raise self.error
        return _Response(self.payload)


class PermissionDenied(Exception):
    """Named like google.api_core.exceptions.PermissionDenied (the hint keys off the name)."""


class NotFound(Exception):
    pass


def _resolve(client, name=NAME, **kwargs):
    return secrets.resolve_secret(name, client_factory=lambda: client, **kwargs)


def test_reads_the_value_and_closes_the_client():
    client = FakeClient(_Payload(VALUE.encode() + b"\n"))
    assert _resolve(client, timeout=7.0) == VALUE  # the trailing newline of `echo` is dropped
    assert client.requests == [({"name": NAME}, 7.0)]
    assert client.transport.closed


def test_checks_crc32c_when_given():
    data = VALUE.encode()
    good = FakeClient(_Payload(data, crc=google_crc32c.value(data)))
    assert _resolve(good) == VALUE
    bad = FakeClient(_Payload(data, crc=google_crc32c.value(data) ^ 1))
    with pytest.raises(secrets.SecretError, match="CRC32C") as info:
        _resolve(bad)
    assert VALUE not in str(info.value)


@pytest.mark.parametrize("name", [
    "projects/my-project/secrets/openai-key/versions/latest",
    "projects/123456789/secrets/KEY_2/versions/12",
])
def test_parse_accepts_secret_version_names(name):
    parsed = secrets.parse_secret_version(name)
    assert name == f"projects/{parsed.project}/secrets/{parsed.secret}/versions/{parsed.version}"


@pytest.mark.parametrize("name", [
    "", "openai-key", "projects/my-project/secrets/openai-key",
    "projects/my-project/secrets/openai-key/versions/0",
    "projects/my-project/secrets/openai key/versions/1",
    "projects/MyProject/secrets/k/versions/1",
    "projects/my-project/secrets/k/versions/latest/",
])
def test_bad_names_fail_before_any_client_is_made(name):
    made = []
    with pytest.raises(secrets.SecretError, match="projects/PROJECT/secrets/SECRET/versions"):
        secrets.resolve_secret(name, client_factory=lambda: made.append(1))
    assert not made


@pytest.mark.parametrize("error, hint", [
    (PermissionDenied("403 Permission 'secretmanager.versions.access' denied"),
     "roles/secretmanager.secretAccessor"),
    (NotFound("404 Secret [projects/1/secrets/openai-key] not found"), "version exists"),
    (TimeoutError("deadline exceeded"), "TimeoutError"),
])
def test_access_errors_are_one_clear_secret_error(error, hint):
    client = FakeClient(error=error)
    with pytest.raises(secrets.SecretError) as info:
        _resolve(client)
    message = str(info.value)
    assert NAME in message and hint in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert client.transport.closed


@pytest.mark.parametrize("payload, expected", [
    (_Payload(b"   \n"), "is empty"),
    (_Payload(b"\xff\xfe" + VALUE.encode()), "not UTF-8"),
    (_Payload(None), "no payload"),
    (None, "no payload"),
])
def test_bad_payloads_never_echo_the_value(payload, expected):
    with pytest.raises(secrets.SecretError, match=expected) as info:
        _resolve(FakeClient(payload))
    assert VALUE not in str(info.value)
    assert VALUE not in repr(info.value.args)


def test_default_factory_builds_the_real_client_lazily(tmp_path):
    pytest.importorskip("google.cloud.secretmanager")
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    # Application Default Credentials of the "authorized_user" kind load without any network.
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "id",
                               "client_secret": "not-a-secret", "refresh_token": "none"}))
    code = (
        "import sys\n"
        "import transforms.secrets as module\n"
        # Importing the module must not import the client library (workers without it still run).
        "assert 'google.cloud.secretmanager' not in sys.modules\n"
        "client = module.default_client_factory()\n"
        "from google.cloud import secretmanager\n"
        "assert isinstance(client, secretmanager.SecretManagerServiceClient), type(client)\n"
        "print('built')\n")
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(adc), "PATH": "/usr/bin:/bin",
           "GOOGLE_CLOUD_PROJECT": "tf-test"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "built", proc.stderr[-2000:]