"""The Pub/Sub emulator through the real google-cloud-pubsub client (tests/pubsub_server.py).

Publish and pull with attributes and ids, redelivery after an ack deadline, dead-lettering after
the delivery attempts run out, and the environment variable that points Google's own clients
at the server.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone

from tests.pubsub_server import EMULATOR_HOST_VAR, PubsubServer, unique_name


def _topic_and_subscription(server, **subscription_args):
    topic = server.create_topic(unique_name("topic"))
    return topic, server.create_subscription(topic, unique_name("sub"), **subscription_args)


def test_publish_then_pull_returns_data_attributes_ids_and_publish_times(pubsub_server):
    topic, sub = _topic_and_subscription(pubsub_server)
    assert topic.startswith("projects/tf-test/topics/topic-")
    assert sub.startswith("projects/tf-test/subscriptions/sub-")
    before = datetime.now(timezone.utc)
    ids = [pubsub_server.publish(topic, b"\x00raw", kind="bytes"),
           pubsub_server.publish(topic, "caf\u00e9", kind="str", lang="fr"),
           pubsub_server.publish(topic, {"id": "t1"}, kind="dict")]
    assert len(set(ids)) == 3 and all(ids)

    pulled = {m.message_id: m for m in pubsub_server.pull(sub, 3, timeout=10)}

    assert set(pulled) == set(ids)
    raw, text, record = (pulled[i] for i in ids)
    assert (raw.data, raw.attributes) == (b"\x00raw", {"kind": "bytes"})
    assert (text.data.decode(), text.attributes) == ("caf\u00e9", {"kind": "str", "lang": "fr"})
    assert json.loads(record.data) == {"id": "t1"}
    for message in pulled.values():
        assert before - timedelta(seconds=1) <= message.publish_time
        assert message.publish_time <= datetime.now(timezone.utc) + timedelta(seconds=1)
    # They were acked: nothing comes back, even after the ack deadline.
    assert pubsub_server.pull(sub, 1, timeout=0.6) == []


def test_an_unacked_message_comes_back_after_its_ack_deadline(pubsub_server):
    topic, sub = _topic_and_subscription(pubsub_server, ack_deadline_secs=1)
    message_id = pubsub_server.publish(topic, "slow", n="1")
    client = pubsub_server.subscriber()

    first = client.pull(request={"subscription": sub, "max_messages": 1}, timeout=5)
    assert [r.message.message_id for r in first.received_messages] == [message_id]
    # Neither acked nor nacked: out on lease until the deadline, then redelivered.
    assert pubsub_server.pull(sub, 1, timeout=0.4) == []
    started = time.monotonic()
    again = pubsub_server.pull(sub, 1, timeout=5)
    assert [(m.message_id, m.data, m.attributes) for m in again] == [(message_id, b"slow",
                                                                      {"n": "1"})]
    assert time.monotonic() - started < 3


def test_a_message_nacked_max_delivery_attempts_times_goes_to_the_dead_letter_topic(
        pubsub_server):
    dead_topic, dead_sub = _topic_and_subscription(pubsub_server)
    topic, sub = _topic_and_subscription(pubsub_server, dead_letter_topic=dead_topic,
                                         max_delivery_attempts=5)
    message_id = pubsub_server.publish(topic, "poison", source="test")

    for attempt in range(5):
        [delivered] = pubsub_server.pull(sub, 1, timeout=5, ack=False)
        assert delivered.message_id == message_id, attempt

    # The next delivery would be the sixth: the message is moved instead.
    assert pubsub_server.pull(sub, 1, timeout=1) == []
    [dead] = pubsub_server.pull(dead_sub, 1, timeout=5)
    assert (dead.data, dead.attributes) == (b"poison", {"source": "test"})
    assert pubsub_server.pull(sub, 1, timeout=0.6) == []


def test_activated_points_clients_made_in_the_block_at_the_server(pubsub_server):
    from google.cloud import pubsub_v1

    topic, sub = _topic_and_subscription(pubsub_server)
    before = os.environ.get(EMULATOR_HOST_VAR)
    assert pubsub_server.env() == {EMULATOR_HOST_VAR: pubsub_server.host}
    assert pubsub_server.host.startswith("127.0.0.1:")

    with pubsub_server.activated():
        assert os.environ[EMULATOR_HOST_VAR] == pubsub_server.host
        publisher = pubsub_v1.PublisherClient()  # as code under test makes its own
        message_id = publisher.publish(topic, b"from a default client", via="env").result(10)
        publisher.transport.close()

    assert os.environ.get(EMULATOR_HOST_VAR) == before
    [got] = pubsub_server.pull(sub, 1, timeout=5)
    assert (got.message_id, got.data, got.attributes) == (message_id, b"from a default client",
                                                          {"via": "env"})


def test_a_stopped_server_restarts_on_its_port_empty():
    with PubsubServer() as server:
        host = server.host
        topic = server.create_topic("kept-name")
        server.stop()
        server.start()
        assert server.host == host
        assert server.create_topic("kept-name") == topic  # gone with the old process
