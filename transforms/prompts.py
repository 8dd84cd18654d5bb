"""Prompt templates: the system and user messages of a ticket, rendered by sandboxed Jinja2.

A template file (``--prompt_template FILE``) is Jinja2 text with two named blocks; text outside
them is ignored::

    {% block system %}You triage support tickets for {{ customer.plan }} customers.{% endblock %}
    {% block user %}
    Ticket {{ id }} ({{ priority }}, via {{ channel }})
    Subject: {{ subject }}

    {{ body }}
    {% endblock %}

Each block's output is stripped of surrounding whitespace; a block that renders empty gives no
message (an empty ``user`` block is an error). Without a ``system`` block the system message is
``--system_prompt``. Variables: every input field by name (``customer.plan``, ``tags``), plus
``id``, ``subject``, ``body`` (as validated: id as a string, subject "" when absent, body from
``--text_field``), ``ticket`` (the input record as a dict, for fields whose names are not
identifiers: ``ticket["first-name"]``) and ``system_prompt``; ``id``/``subject``/``body`` win
over input fields of the same name.

The built-in prompt (no ``--prompt_template``) is rendered by plain string formatting, not by
Jinja2: the same text as :data:`DEFAULT_TEMPLATE` renders (tests/test_prompts.py checks they
agree) at a fraction of the cost per ticket.

Rendering is sandboxed (``SandboxedEnvironment``: no access to ``_private`` attributes or unsafe
callables) and strict (``StrictUndefined``): a missing field raises :class:`TemplateRenderError`
naming it, which the LLM step turns into a dead letter ``template_error`` instead of a crash.
Compile a template once per worker process (:class:`PromptRenderer`), not per ticket.

A shared document (``--prompt_prefix_file``: a policy manual, worked examples) is one more system
message right after the system prompt and before the ticket, the same text in every request: with
the system prompt it is the static prefix the provider's prompt cache keeps.

Example::

    renderer = PromptRenderer(source, system_prompt="Be brief.")   # compiled once
    messages = renderer.render(ticket)   # [{"role": "system", ...}, {"role": "user", ...}]
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import jinja2
from jinja2.sandbox import SandboxedEnvironment

SYSTEM_BLOCK = "system"
USER_BLOCK = "user"

# The built-in prompt: the system prompt,
# then "Ticket ID: ...", the subject line when there is a subject, a blank line and the body.
# trim_blocks eats the newline right after "{% endif %}", hence two of them there.
DEFAULT_TEMPLATE = (
    "{% block system %}{{ system_prompt }}{% endblock %}"
    "{% block user %}Ticket ID: {{ id }}\n"
    "{% if subject %}Subject: {{ subject }}\n{% endif %}\n"
    "\n{{ body }}{% endblock %}"
)


class TemplateLoadError(ValueError):
    """The template does not compile, or lacks the ``user`` block."""


class TemplateRenderError(Exception):
    """Rendering one ticket failed (a missing field, a sandbox violation, a bad filter call)."""


def _environment() -> SandboxedEnvironment:
    # Plain text, not HTML: no autoescaping. trim/lstrip blocks let authors put tags on their own
    # lines without leaving blank lines behind.
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def compile_template(source: str) -> jinja2.Template:
    """Compiles a template and checks it has a ``user`` block.

    Args:
      source: The template text.

    Returns:
      The compiled template.

    Raises:
      TemplateLoadError: on a syntax error (the message gives the line) or no ``user`` block.
    """
    try:
        template = _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateLoadError(f"line {exc.lineno}: {exc.message}") from None
    if USER_BLOCK not in template.blocks:
        raise TemplateLoadError("no {% block user %}...{% endblock %}: the template must define "
                                "the user message (and may define a system block)")
    unknown = sorted(set(template.blocks) - {SYSTEM_BLOCK, USER_BLOCK})
    if unknown:
        raise TemplateLoadError(f"unknown block(s) {', '.join(unknown)}: only 'system' and "
                                "'user' are rendered")
    return template


def template_variables(ticket, system_prompt: str) -> Dict[str, Any]:
    """The variables a template sees for ``ticket`` (see the module docstring)."""
    fields = dict(ticket.fields)
    variables: Dict[str, Any] = {k: v for k, v in fields.items() if isinstance(k, str)}
    variables.update(id=ticket.id, subject=ticket.subject, body=ticket.body, ticket=fields,
                     system_prompt=system_prompt)
    return variables


class PromptRenderer:
    """Renders the chat messages of tickets from one compiled template.

    Args:
      source: Template text; None for :data:`DEFAULT_TEMPLATE` (today's built-in prompt).
      system_prompt: The ``--system_prompt`` text: the ``system_prompt`` variable, and the system
        message of templates without a ``system`` block.
      prefix: The ``--prompt_prefix_file`` text, a system message after the system prompt
        (None or empty: none).

    Raises:
      TemplateLoadError: when the template does not compile.
    """

    def __init__(self, source: Optional[str], system_prompt: str = "",
                 prefix: Optional[str] = None):
        self._template = compile_template(DEFAULT_TEMPLATE if source is None else source)
        self._system_prompt = system_prompt
        self._builtin = source is None
        # The built-in template's system block is the system prompt, stripped; empty: no message.
        self._system_message = ({"role": "system", "content": system_prompt.strip()}
                                if system_prompt.strip() else None)
        self._prefix_message = ({"role": "system", "content": prefix.strip()}
                                if prefix and prefix.strip() else None)

    def _block(self, name: str, variables: Mapping[str, Any]) -> str:
        render = self._template.blocks[name]
        return "".join(render(self._template.new_context(dict(variables)))).strip()

    def render(self, ticket) -> List[Dict[str, str]]:
        """The messages for one ticket: a system message (unless empty) and the user message.

        Raises:
          TemplateRenderError: with a message naming what failed, e.g. "'product' is undefined".
        """
        if self._builtin:
            return self._render_builtin(ticket)
        variables = template_variables(ticket, self._system_prompt)
        try:
            if SYSTEM_BLOCK in self._template.blocks:
                system = self._block(SYSTEM_BLOCK, variables)
            else:
                system = self._system_prompt.strip()
            user = self._block(USER_BLOCK, variables)
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(f"{type(exc).__name__}: {exc.message or exc}") from None
        except Exception as exc:  # noqa: BLE001 - any template failure is the ticket's, not ours
            raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from None
        if not user:
            raise TemplateRenderError("the user block rendered empty")
        messages = []
        if system:
            messages.append({"role": "system", "content": system})
        if self._prefix_message is not None:
            messages.append(dict(self._prefix_message))
        messages.append({"role": "user", "content": user})
        return messages

    def _render_builtin(self, ticket) -> List[Dict[str, str]]:
        """What :data:`DEFAULT_TEMPLATE` renders, by string formatting (it cannot fail)."""
        subject = ticket.subject
        head = (f"Ticket ID: {ticket.id}\nSubject: {subject}\n\n" if subject
                else f"Ticket ID: {ticket.id}\n\n")
        user = {"role": "user", "content": f"{head}{ticket.body}".strip()}
        if self._system_message is None and self._prefix_message is None:
            return [user]
        return [dict(m) for m in (self._system_message, self._prefix_message)
                if m is not None] + [user]
