"""ticketflow: run support tickets through an LLM on Apache Beam, within the provider's limits.

The same distribution carries the pipeline (``pipeline``), its transforms (``transforms``) and the
local OpenAI-compatible provider simulator (``simulator``); ``--setup_file ./setup.py`` ships all
three to Dataflow workers.
"""

import setuptools

# Beam is pinned to ONE version. It must move together with templates/requirements.txt and the
# base image tag in templates/Dockerfile (a test checks they agree).
BEAM_VERSION = "2.77.0"

setuptools.setup(
    name="ticketflow",
    version="0.1.0",
    description="Run large volumes of support tickets through an LLM on Apache Beam.",
    python_requires=">=3.10",
    # What the driver and the workers run, only: benchmarks/ and tools/ run from the repository.
    packages=setuptools.find_packages(include=["pipeline", "pipeline.*", "transforms",
                                               "transforms.*", "simulator", "simulator.*"]),
    package_data={"transforms": ["pricing.json"]},
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        # The aiohttp transport (DefaultAioHttpClient) and httpx2 responses of the caller.
        "openai[aiohttp]>=3.57,<4",
        # --provider anthropic: the Messages API through the official SDK (its retries off).
        "anthropic>=0.40",
        # --provider gemini: generateContent through the official SDK (its retries off). The
        # caller posts through the client's request layer, so the major version is bounded.
        "google-genai>=2.30,<3",
        "tenacity>=8.2",
        "pyarrow>=14",
        "google-cloud-storage>=2.10",
        "aiohttp>=3.9",
        "jinja2>=3.1",
        "tqdm>=4.66",
        "jsonschema>=4.20",
        "redis>=5.0.1",
        "orjson>=3.9",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.2",
            "pytest-xdist>=3.5",
            "jsonschema>=4.20",
            "gcp-storage-emulator>=2026.7",
            "build>=1.2",
            "wheel>=0.43",
        ],
    },
)
