"""The files a job's flags name, read once by the driver, and the error of every flag mistake.

``--system_prompt @PATH``, ``--prompt_template``, ``--prompt_prefix_file``,
``--response_schema`` and ``--endpoints`` name files (local or ``gs://``); the driver reads them
here once, so that a missing, unreadable or malformed file stops the job before any work, and
the workers get the text, not the path. :mod:`pipeline.config` re-exports :class:`ConfigError`.
"""

from __future__ import annotations

from typing import Optional

from transforms import prompts, structured
from transforms.llm.config import DEFAULT_SYSTEM_PROMPT
from transforms.sinks import RESULT_SCHEMA


class ConfigError(Exception):
    """A flag is missing, malformed or inconsistent; the message says how to fix it."""


def read_system_prompt(value: Optional[str]) -> str:
    if value is None:
        return DEFAULT_SYSTEM_PROMPT
    if value.startswith("@"):
        path = value[1:]
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"--system_prompt: cannot read {path!r}: {exc.strerror}. "
                              "Pass the prompt text, or @PATH to an existing file.") from None
    return value

def read_flag_file(flag: str, path: str) -> str:
    """The text of a file named by a flag (local or gs://), or a ConfigError saying why not."""
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel

    try:
        with FileSystems.open(path) as handle:
            return handle.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--{flag} {path!r}: the file is not UTF-8 text.") from None
    except Exception as exc:  # noqa: BLE001 - any filesystem error is the user's to fix
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"--{flag} {path!r}: cannot read it ({detail}); pass an existing "
                          "file.") from None


def prompt_template(path: Optional[str]) -> Optional[str]:
    """The template's text, compiled once here so that syntax errors stop the job early."""
    if path is None:
        return None
    source = read_flag_file("prompt_template", path)
    try:
        prompts.compile_template(source)
    except prompts.TemplateLoadError as exc:
        raise ConfigError(f"--prompt_template {path!r}: {exc}.") from None
    return source


def prompt_prefix(path: Optional[str]) -> Optional[str]:
    """--prompt_prefix_file's text, read once here (workers get the text, not the path)."""
    if path is None:
        return None
    text = read_flag_file("prompt_prefix_file", path).strip()
    if not text:
        raise ConfigError(f"--prompt_prefix_file {path!r}: the file is empty; pass a document "
                          "to share in every request, or drop the flag.")
    return text


def response_schema(path: Optional[str], output_format: str
                     ) -> Optional[structured.StructuredOutput]:
    if path is None:
        return None
    try:
        result = structured.parse_schema(read_flag_file("response_schema", path), path)
        if output_format == "parquet":
            structured.parquet_fields(result.schema, RESULT_SCHEMA.names)
    except structured.SchemaLoadError as exc:
        message = " ".join(str(exc).split())[:300]
        raise ConfigError(f"--response_schema {path!r}: {message}.") from None
    return result
