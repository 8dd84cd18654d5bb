"""A streaming job on a real local Pub/Sub (the emulator, through the real client), on Prism.

One job reads a subscription, publishes results and dead letters to topics, writes windowed
files; tickets are published twice on purpose (paid once, with the response store); SIGINT
drains it; a restart on the same subscription answers nothing twice.
"""

from __future__ import annotations

import json

import pytest

from tests.pubsub_server import unique_name
from tests.test_streaming import drain_when, needs_prism, result_ids, start_job, tickets

pytestmark = [pytest.mark.e2e, needs_prism]


def test_pubsub_job_answers_once_publishes_drains_and_restarts(pubsub_server, simulator_factory,
                                                               tmp_path):
    ps = pubsub_server
    tickets_topic = ps.create_topic(unique_name("tickets"))
    subscription = ps.create_subscription(tickets_topic, unique_name("job"))
    answers = ps.create_topic(unique_name("answers"))
    answers_sub = ps.create_subscription(answers, unique_name("answers-reader"))
    dead = ps.create_topic(unique_name("dead"))
    dead_sub = ps.create_subscription(dead, unique_name("dead-reader"))
    sim = simulator_factory()
    store = tmp_path / "store"
    common = ["--input_subscription", subscription, "--base_url", sim.base_url,
              "--response_store", str(store), "--window_secs", "1",
              "--progress_interval_secs", "1", "--output_topic", answers,
              "--dead_letter_topic", dead]
    batch = tickets("P", 12)
    for ticket in batch:
        ps.publish(tickets_topic, ticket, team="billing")
    ps.publish(tickets_topic, "{not json")
    for ticket in batch[:4]:  # delivered twice: answered from the store, paid once
        ps.publish(tickets_topic, ticket)

    out = tmp_path / "out"
    proc = start_job(common, out, env=ps.env())
    _, stderr = drain_when(proc, out, 16, "16 results")
    assert proc.returncode == 130, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == 17 and summary["succeeded"] == 16
    assert summary["dead_letter_reasons"] == {"invalid_json": 1}
    assert summary["cache_hits"] == 4 and summary["ledger_balanced"] is True
    assert sim.stats()["successful_completions"] == 12  # each ticket paid once
    assert summary["streaming"]["first_response_ms_p99"] is not None

    published = ps.pull(answers_sub, max_messages=16, timeout=10)
    assert sorted(m.attributes["id"] for m in published) == sorted(
        [t["id"] for t in batch] + [t["id"] for t in batch[:4]])
    first = json.loads(published[0].data)
    assert first["origin"]["message_id"] and first["origin"]["publish_time"]
    team = [json.loads(m.data)["origin"]["attributes"] for m in published]
    assert {"team": "billing"} in team
    letters = ps.pull(dead_sub, max_messages=1, timeout=10)
    assert len(letters) == 1 and json.loads(letters[0].data)["reason"] == "invalid_json"

    # Restarted on the same subscription: the acknowledged messages are not delivered again;
    # a new ticket is answered, and nothing is paid twice.
    ps.publish(tickets_topic, tickets("Q", 1)[0])
    again = tmp_path / "again"
    proc = start_job(common, again, env=ps.env())
    _, stderr = drain_when(proc, again, 1, "the new ticket's result")
    assert proc.returncode == 130, stderr[-3000:]
    assert result_ids(again) == ["Q-0"]
    assert sim.stats()["successful_completions"] == 13
