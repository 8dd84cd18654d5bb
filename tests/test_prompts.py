"""Prompt templates: rendering, missing fields, the sandbox, and template_error dead letters."""

from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLES, write_jsonl
from transforms.llm import DEFAULT_SYSTEM_PROMPT
from transforms.prompts import (DEFAULT_TEMPLATE, PromptRenderer, TemplateLoadError,
                                TemplateRenderError, compile_template)
from transforms.records import Ticket

TRIAGE_TEMPLATE = EXAMPLES / "triage_template.j2"


def _ticket(record: dict) -> Ticket:
    return Ticket(id=str(record["id"]), subject=(record.get("subject") or "").strip(),
                  body=record["body"].strip(), fields=record)


def _examples():
    with open(EXAMPLES / "tickets.jsonl", encoding="utf-8") as handle:
        return [_ticket(json.loads(line)) for line in handle if line.strip()]


@pytest.mark.parametrize("system_prompt", [DEFAULT_SYSTEM_PROMPT, "Be brief.", ""])
def test_default_template_renders_the_built_in_prompt(system_prompt):
    renderer = PromptRenderer(None, system_prompt)
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    assert renderer.render(Ticket(id="T-1", subject="", body="no subject here",
                                  fields={"id": "T-1"})) == system + [
        {"role": "user", "content": "Ticket ID: T-1\n\nno subject here"}]
    assert renderer.render(Ticket(id="42", subject="Refund",
                                  body="line one\n\n  indented\nlast", fields={"id": 42})) == (
        system + [{"role": "user",
                   "content": "Ticket ID: 42\nSubject: Refund\n\nline one\n\n  indented\nlast"}])
    for ticket in _examples():
        user = renderer.render(ticket)[-1]["content"]
        head = f"Ticket ID: {ticket.id}\n" + (f"Subject: {ticket.subject}\n" if ticket.subject
                                               else "")
        assert user == head + "\n" + ticket.body, ticket.id


_ODD_TICKETS = [
    Ticket(id="T-1", subject="", body="no subject", fields={}),
    Ticket(id=" spaced id ", subject="  padded subject  ", body="  body with spaces  \n\n",
           fields={}),
    Ticket(id="7", subject="Re: {{ not a variable }} {% raw %}", body="{{ body }} {% if x %}",
           fields={}),
    Ticket(id="ü-9", subject="Ünïcödé 🎫", body="línea uno\r\n\tlínea dos\u2028fin ",
           fields={}),
    Ticket(id="8", subject=None, body="subject is None", fields={}),
    Ticket(id="9", subject="\n", body="\n\nbody after blank lines", fields={}),
]


@pytest.mark.parametrize("system_prompt", [DEFAULT_SYSTEM_PROMPT, "", "   ", "  Be brief.\n"])
def test_built_in_prompt_is_exactly_what_the_default_template_renders(system_prompt):
    from tools.ticketgen.generator import generate

    fast = PromptRenderer(None, system_prompt)
    jinja = PromptRenderer(DEFAULT_TEMPLATE, system_prompt)  # a source: the Jinja2 path
    generated = [_ticket(record) for record in generate(300, seed=5)]
    for ticket in _ODD_TICKETS + _examples() + generated:
        assert fast.render(ticket) == jinja.render(ticket), ticket.id
    # Each call returns fresh messages: a layer that edits one cannot change the next ticket's.
    first = fast.render(_ODD_TICKETS[0])
    first[0]["content"] = "edited"
    assert fast.render(_ODD_TICKETS[0]) == jinja.render(_ODD_TICKETS[0])


def test_triage_template_renders_any_field():
    renderer = PromptRenderer(TRIAGE_TEMPLATE.read_text(), "unused")
    first = _examples()[0]
    system, user = renderer.render(first)
    assert system["role"] == "system" and "triage" in system["content"]
    assert "{%" not in system["content"] and "{#" not in system["content"]
    assert user["content"].startswith("Ticket ID: T-000001\nSubject: Can't log in\n")
    assert "Customer: Emma Chen (free plan)" in user["content"]
    assert "Tags: login, 2fa" in user["content"]
    assert user["content"].endswith(first.body)
    no_tags = _ticket({**first.fields, "tags": []})
    assert "Tags:" not in renderer.render(no_tags)[1]["content"]


def test_variables_ticket_dict_and_precedence():
    source = ("{% block user %}{{ id }}|{{ ticket.id }}|{{ ticket['first-name'] }}|"
              "{{ system_prompt }}{% endblock %}")
    ticket = Ticket(id="7", subject="", body="b", fields={"id": 7, "first-name": "Ann"})
    messages = PromptRenderer(source, "SYS").render(ticket)
    # No system block: the system message is --system_prompt.
    assert messages == [{"role": "system", "content": "SYS"},
                        {"role": "user", "content": "7|7|Ann|SYS"}]


def test_empty_system_block_sends_no_system_message():
    source = "{% block system %}  {% endblock %}{% block user %}\n  {{ body }}\n{% endblock %}"
    ticket = Ticket(id="1", subject="", body="hello", fields={"id": "1"})
    assert PromptRenderer(source, "ignored").render(ticket) == [
        {"role": "user", "content": "hello"}]


@pytest.mark.parametrize("expression,needle", [
    ("{{ product }}", "'product' is undefined"),
    ("{{ customer.tier }}", "tier"),
    ("{{ ticket.order_number }}", "order_number"),
])
def test_missing_field_is_a_render_error_naming_it(expression, needle):
    source = "{% block user %}" + expression + " {{ body }}{% endblock %}"
    ticket = Ticket(id="1", subject="", body="b", fields={"id": "1", "customer": {"name": "x"}})
    renderer = PromptRenderer(source)
    with pytest.raises(TemplateRenderError) as caught:
        renderer.render(ticket)
    assert needle in str(caught.value)
    assert "UndefinedError" in str(caught.value)


@pytest.mark.parametrize("expression", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ticket.__class__ }}",
    "{{ body.__len__() }}",
    "{{ cycler.__init__.__globals__ }}",
])
def test_sandbox_refuses_unsafe_access(expression):
    renderer = PromptRenderer("{% block user %}" + expression + "{% endblock %}")
    ticket = Ticket(id="1", subject="", body="b", fields={"id": "1"})
    with pytest.raises(TemplateRenderError) as caught:
        renderer.render(ticket)
    message = str(caught.value)
    assert "SecurityError" in message or "UndefinedError" in message
    assert "object at 0x" not in message and "<class" not in message


def test_empty_user_message_is_a_render_error():
    renderer = PromptRenderer("{% block user %}{{ subject }}{% endblock %}")
    with pytest.raises(TemplateRenderError, match="empty"):
        renderer.render(Ticket(id="1", subject="", body="b", fields={"id": "1"}))


@pytest.mark.parametrize("source,needle", [
    ("{% block user %}{{ body }", "line 1"),
    ("{% block system %}hi{% endblock %}", "block user"),
    ("{% block user %}x{% endblock %}{% block footer %}y{% endblock %}", "footer"),
    ("{% block user %}\n\n{% if x %}\n{% endblock %}", "line"),
])
def test_bad_templates_fail_to_compile(source, needle):
    with pytest.raises(TemplateLoadError) as caught:
        compile_template(source)
    assert needle in str(caught.value)


# --------------------------------------------------------------------------- end to end


def test_missing_field_gives_template_error_dead_letters(run_pipeline, simulator_factory,
                                                         tmp_path):
    sim = simulator_factory()
    template = tmp_path / "t.j2"
    template.write_text("{% block system %}Plan: {{ customer.plan }}{% endblock %}\n"
                        "{% block user %}{{ id }}: {{ body }}{% endblock %}\n")
    records = [{"id": f"T-{i}", "body": f"body {i}", "customer": {"plan": "pro"}}
               for i in range(6)]
    records += [{"id": "T-no-customer", "body": "x"},
                {"id": "T-no-plan", "body": "y", "customer": {"name": "Bo"}}]
    path = write_jsonl(tmp_path / "t.jsonl", records)
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url,
                       "--prompt_template", str(template))
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["read"] == 8 and summary["succeeded"] == 6 and summary["dead_lettered"] == 2
    assert summary["ledger_balanced"] is True
    dead = run.dead_letters_by_id()
    assert set(dead) == {"T-no-customer", "T-no-plan"}
    for record in dead.values():
        assert record["stage"] == "llm" and record["reason"] == "template_error"
        assert record["error_class"] == "TemplateFailed" and record["attempts"] == 0
        assert record["ticket"]["id"] == record["id"]
    assert "customer" in dead["T-no-customer"]["message"]
    assert "plan" in dead["T-no-plan"]["message"]
    # No request was sent for a ticket whose prompt could not be rendered.
    assert summary["requests"] == sim.stats()["requests"] == 6


def test_sandbox_escape_in_pipeline_is_a_dead_letter(run_pipeline, simulator_factory, tmp_path):
    sim = simulator_factory()
    template = tmp_path / "evil.j2"
    template.write_text("{% block user %}{{ ''.__class__.__mro__ }} {{ body }}{% endblock %}")
    path = write_jsonl(tmp_path / "t.jsonl", [{"id": "T-1", "body": "hi"}])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url,
                       "--prompt_template", str(template))
    assert run.returncode == 0, run.stderr
    [dead] = run.dead_letters()
    assert dead["reason"] == "template_error" and "unsafe" in dead["message"]
    assert sim.stats()["requests"] == 0


@pytest.mark.parametrize("content,needle", [
    (None, "cannot read"),
    ("{% block user %}{{ body }", "line 1"),
    ("{% block system %}only a system block{% endblock %}", "block user"),
])
def test_bad_template_file_fails_before_any_work(run_pipeline, tmp_path, content, needle):
    template = tmp_path / "bad.j2"
    if content is not None:
        template.write_text(content)
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate",
                       "--prompt_template", str(template))
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--prompt_template" in lines[0] and needle in lines[0]
    assert not run.output.exists()
