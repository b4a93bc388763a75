"""Speed benchmarks: each prints ratios against a baseline run in the same process (run them
with ``python -m benchmarks.speed.NAME``; ``tools/gpu_check.sh`` runs them on a GPU).

- ``pooling``: meanpool's fast path vs SAM's reference generator (``standin``: a SAM whose
  decoder returns masks of a known segmentation, for a realistic load without real weights);
- ``sweep``: arithmetic transfer runs batched vs one at a time;
- ``mask_step``: discovery's mask step vs a plain training step;
- ``vision_step``: one training step of each vision architecture.

Each writes its ``--json`` in the one shape of ``result`` (rows of named fields, every number
with its unit), which ``tools/gpu_check_table.py`` reads.
"""
