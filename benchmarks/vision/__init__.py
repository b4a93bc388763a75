"""The vision experiments of the paper's Section 5 (16-class ImageNet, mean-pooled images,
cue-conflict stimuli): table1 (Tables 1-2, Figures 5 and 11), ``subind-bench evaluate`` and
``score``. docs/architecture.md draws the house; :data:`ORDER` is its rule.
"""

# The order inside benchmarks/vision/: a module imports only modules listed before it (names
# relative to benchmarks.vision; "models" is the package, which re-exports its modules). Floors:
# models and weights; settings and registries; images and evaluation; the synthetic world; one
# run's inputs, checks and stages; the run; the plan and reports; the command line.
# tests/test_layers.py checks the code against it, tools/layout_stats.py counts arrows back up.
ORDER = (
    "timing",
    "models.preprocessing",
    "models.arch",
    "models.weights",
    "models.libraries",
    "models.convert",
    "models.zoo",
    "models.sources",
    "models",
    "cue_conflict",
    "config",
    "fidelity",
    "strategies",
    "grid",
    "data",
    "decode",
    "tensors",
    "evaluate",
    "toyworld.world",
    "toyworld.pretrain",
    "toyworld",
    "inputs",
    "stages",
    "training",
    "checks",
    "runs",
    "plan",
    "report",
    "experiment",
    "worker",
    "cli",
)
