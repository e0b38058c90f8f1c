"""Data exchange with other pipelines and SFT toolkits.

- :mod:`sairlib.interop.authors`: the authors' released pipeline output (a ``result.json`` per
  sample) read as our :class:`~sairlib.trajectory.Trajectory` objects, the mode inferred.
- :mod:`sairlib.interop.export`: our trajectories written as ShareGPT-style conversations with
  image lists, or as OpenAI-style messages, images as PNG files referenced by path.
- :mod:`sairlib.interop.janus` (imported on its own; needs torch): Janus as a unified policy, with
  its own VQ codec, constrained interleaved generation, the selective loss, ``sft`` and
  ``grpo_step``; :mod:`sairlib.interop.emu3` the same for Emu3 (image codes in the text vocabulary).

    from sairlib.interop import load_authors_results, export_sharegpt, export_openai_messages
    trajs = load_authors_results("their_outputs/")
    export_sharegpt(trajs, "exports/sharegpt")
"""
from .authors import AuthorsFormatError, load_authors_result, load_authors_results
from .export import export_openai_messages, export_sharegpt, to_openai_messages, to_sharegpt

__all__ = ["AuthorsFormatError", "load_authors_result", "load_authors_results", "export_sharegpt",
           "export_openai_messages", "to_sharegpt", "to_openai_messages"]
