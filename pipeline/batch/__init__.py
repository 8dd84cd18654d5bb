"""``--api batch``: the provider's Batch API driver (docs/batch.md).

* :mod:`pipeline.batch.run` — the pack pipeline, attaching to the job a crash left, the collect
  pipeline's outcome files;
* :mod:`pipeline.batch.driver` — rounds of waves of batches: upload, create, poll, cancel at the
  deadline, collect; one driver for every provider, talking to ``--provider``'s batch client
  (:func:`transforms.llm.providers.batch_client`: OpenAI's Files and Batches, Anthropic's
  Message Batches);
* :mod:`pipeline.batch.journal` — the job's journal, one file per event, and its fold;
* :mod:`pipeline.batch.policy` — the driver's pure decisions;
* :mod:`pipeline.batch.files` — request parts, next rounds, outcome files.
"""
