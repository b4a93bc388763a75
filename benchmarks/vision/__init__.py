"""Vision models, data and evaluation for the paper's Section 5 (16-class ImageNet, mean-pooled
images, cue-conflict stimuli).

- ``models``: the architecture registry (torchvision ResNet18 / ViT-B/16 and small CPU versions
  built from the same classes), weight files, heads and the masking preset.
- ``data``: transforms and datasets (image folders, meanpool shards) and a seeded loader.
- ``cue_conflict``: stimuli, the three cue-conflict metrics and model-vs-human response files.
- ``evaluate``: 16-way decisions (directly or through the 1000-class decision mapping) and the
  evaluation of one model on original, pooled and cue-conflict images.
"""
