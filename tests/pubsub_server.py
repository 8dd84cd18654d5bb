"""A real Pub/Sub server for tests: the in-memory emulator on a free 127.0.0.1 port, stopped after.

Tests of the streaming mode talk to a real Pub/Sub server through the real google-cloud-pubsub
client (no fake client). The server is ``tools/pubsub_emulator`` (the Go client's ``pstest``
fake: topics, pull and streaming pull, ack deadlines, redelivery, dead-letter policies), built by
``.ci/install_runners.sh`` into ``/opt/ticketflow-runners/bin/pubsub-emulator``, or found at
``$TF_PUBSUB_EMULATOR_BIN``; tests skip when it is absent.

Google's clients find an emulator through ``PUBSUB_EMULATOR_HOST``, read when a client is made.
The helpers here build their own clients bound to this server whatever the environment says;
code under test gets the variable through :meth:`PubsubServer.env` (subprocesses) or
:meth:`PubsubServer.activated` (clients made in this process, e.g. by a Beam pipeline).

Example::

    with PubsubServer() as server:
        topic = server.create_topic(unique_name("tickets"))
        sub = server.create_subscription(topic, unique_name("tickets"), ack_deadline_secs=1)
        message_id = server.publish(topic, {"id": "t1"}, source="test")
        [(data, attributes, got_id, publish_time)] = server.pull(sub, 1, timeout=5)
        subprocess.run([...], env={**os.environ, **server.env()})
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Union

import pytest

from tests.conftest import stop_process

PROJECT = "tf-test"
EMULATOR_HOST_VAR = "PUBSUB_EMULATOR_HOST"
RUNNERS_DIR = Path(os.environ.get("TF_RUNNERS_DIR", "/opt/ticketflow-runners"))


def unique_name(prefix: str) -> str:
    """A topic or subscription id no other test uses (tests share one server per process)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def topic_path(name: str, project: str = PROJECT) -> str:
    """``projects/PROJECT/topics/NAME``; a full path is returned as it is."""
    return name if name.startswith("projects/") else f"projects/{project}/topics/{name}"


def subscription_path(name: str, project: str = PROJECT) -> str:
    """``projects/PROJECT/subscriptions/NAME``; a full path is returned as it is."""
    return name if name.startswith("projects/") else f"projects/{project}/subscriptions/{name}"


def emulator_binary() -> str:
    """The emulator's path, or skip the test saying how to get it."""
    path = os.environ.get("TF_PUBSUB_EMULATOR_BIN") or str(RUNNERS_DIR / "bin" / "pubsub-emulator")
    if not Path(path).is_file():
        pytest.skip(f"Pub/Sub emulator not found at {path} (set TF_PUBSUB_EMULATOR_BIN or run "
                    ".ci/install_runners.sh, which builds tools/pubsub_emulator with Go)")
    return path


class Pulled(NamedTuple):
    """One message as a subscriber received it."""

    data: bytes
    attributes: Dict[str, str]
    message_id: str
    publish_time: datetime


class PubsubServer:
    """One emulator process on 127.0.0.1, with helpers that use the real Python client.

    Args:
      port: The port; a free one (chosen by the emulator) when None. After :meth:`stop`,
        :meth:`start` comes back on the same port, empty.
      project: The project of the paths the helpers build from bare names.
    """

    def __init__(self, port: Optional[int] = None, project: str = PROJECT):
        self.binary = emulator_binary()
        self.port = port or 0
        self.project = project
        self.proc: Optional[subprocess.Popen] = None
        self._publisher = None
        self._subscriber = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the value of ``PUBSUB_EMULATOR_HOST``."""
        if not self.port:
            raise RuntimeError("the Pub/Sub emulator has not started")
        return f"127.0.0.1:{self.port}"

    def env(self) -> Dict[str, str]:
        """What a subprocess's environment needs to reach this server."""
        return {EMULATOR_HOST_VAR: self.host}

    @contextlib.contextmanager
    def activated(self) -> Iterator["PubsubServer"]:
        """Sets ``PUBSUB_EMULATOR_HOST`` in this process for the block (clients made in it use
        this server), then puts back what was there."""
        before = os.environ.get(EMULATOR_HOST_VAR)
        os.environ[EMULATOR_HOST_VAR] = self.host
        try:
            yield self
        finally:
            if before is None:
                os.environ.pop(EMULATOR_HOST_VAR, None)
            else:
                os.environ[EMULATOR_HOST_VAR] = before

    def start(self, timeout: float = 10.0) -> "PubsubServer":
        """Starts the emulator and waits for its ``listening 127.0.0.1:PORT`` line."""
        # stderr goes to a file, read only to explain a failed start: an unread pipe could fill.
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([self.binary, "-port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=self._stderr)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("listening 127.0.0.1:"):
            self.stop()
            self._stderr.seek(0)
            raise RuntimeError(f"the Pub/Sub emulator did not start (stdout {line!r}, stderr "
                               f"{self._stderr.read().decode(errors='replace').strip()!r})")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        """Stops the emulator (every topic, subscription and message is gone)."""
        for client in (self._publisher, self._subscriber):
            if client is not None:
                # Nothing is left to flush: publish() waits for each message's id.
                client.transport.close()
        self._publisher = self._subscriber = None
        if self.proc is not None:
            stop_process(self.proc)
            self.proc.stdout.close()
            self._stderr.close()
            self.proc = None

    def __enter__(self) -> "PubsubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- clients and helpers

    def publisher(self):
        """A ``pubsub_v1.PublisherClient`` bound to this server (made once, kept)."""
        if self._publisher is None:
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
            import grpc
            # A transport on an insecure channel reaches the server without reading the
            # environment and without credentials.
            transport = PublisherGrpcTransport(channel=grpc.insecure_channel(self.host))
            self._publisher = pubsub_v1.PublisherClient(transport=transport)
        return self._publisher

    def subscriber(self):
        """A ``pubsub_v1.SubscriberClient`` bound to this server (made once, kept)."""
        if self._subscriber is None:
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
            import grpc
            transport = SubscriberGrpcTransport(channel=grpc.insecure_channel(self.host))
            self._subscriber = pubsub_v1.SubscriberClient(transport=transport)
        return self._subscriber

    def create_topic(self, name: str) -> str:
        """Creates a topic; returns its full path."""
        path = topic_path(name, self.project)
        self.publisher().create_topic(request={"name": path})
        return path

    def create_subscription(self, topic: str, name: str, ack_deadline_secs: int = 10,
                            dead_letter_topic: Optional[str] = None,
                            max_delivery_attempts: Optional[int] = None) -> str:
        """Creates a pull subscription; returns its full path.

        Args:
          topic: The topic (name or full path).
          name: The subscription's name (or full path).
          ack_deadline_secs: Seconds a pulled message stays unacked before it is redelivered
            (the emulator takes 1 and up; Pub/Sub itself 10 and up).
          dead_letter_topic: Where a message goes after ``max_delivery_attempts`` deliveries.
          max_delivery_attempts: Deliveries before dead-lettering (Pub/Sub allows 5 to 100).
        """
        path = subscription_path(name, self.project)
        request = {"name": path, "topic": topic_path(topic, self.project),
                   "ack_deadline_seconds": ack_deadline_secs}
        if dead_letter_topic is not None:
            request["dead_letter_policy"] = {
                "dead_letter_topic": topic_path(dead_letter_topic, self.project),
                "max_delivery_attempts": max_delivery_attempts or 5}
        self.subscriber().create_subscription(request=request)
        return path

    def publish(self, topic: str, data: Union[bytes, str, dict], **attributes: str) -> str:
        """Publishes one message (a str as UTF-8, a dict as JSON); returns its message id."""
        if isinstance(data, dict):
            data = json.dumps(data)
        if isinstance(data, str):
            data = data.encode("utf-8")
        future = self.publisher().publish(topic_path(topic, self.project), data, **attributes)
        return future.result(timeout=10)

    def pull(self, subscription: str, max_messages: int = 100, timeout: float = 5.0,
             ack: bool = True) -> List[Pulled]:
        """Pulls until ``max_messages`` have come or ``timeout`` seconds have passed.

        Args:
          subscription: The subscription (name or full path).
          max_messages: Returns as soon as this many have come.
          timeout: Seconds to wait in all; what came by then is returned (maybe nothing).
          ack: True acks each message; False nacks it (deadline 0: redelivered at once, and a
            delivery attempt spent, as a subscriber that failed would).

        Returns:
          The messages in the order received.
        """
        path = subscription_path(subscription, self.project)
        client = self.subscriber()
        got: List[Pulled] = []
        deadline = time.monotonic() + timeout
        while len(got) < max_messages:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # The emulator holds an empty pull up to 0.5 s before answering nothing.
            response = client.pull(request={"subscription": path,
                                            "max_messages": max_messages - len(got)},
                                   timeout=max(left, 1.0))
            ack_ids = []
            for received in response.received_messages:
                message = received.message
                got.append(Pulled(message.data, dict(message.attributes), message.message_id,
                                  message.publish_time))
                ack_ids.append(received.ack_id)
            if ack_ids and ack:
                client.acknowledge(request={"subscription": path, "ack_ids": ack_ids})
            elif ack_ids:
                client.modify_ack_deadline(request={"subscription": path, "ack_ids": ack_ids,
                                                    "ack_deadline_seconds": 0})
        return got
