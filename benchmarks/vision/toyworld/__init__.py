"""The synthetic shape/texture world of the mini preset (``world``) and the pretraining of the
mini models on it (``pretrain``); see docs/toyworld.md."""
