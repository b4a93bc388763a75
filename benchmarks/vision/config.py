"""Settings of the vision experiments (paper Section 5, Tables 1-2, Figures 5 and 11, Appendix C)
and their presets. Where the paper's text and its released code differ, a setting names both
choices; docs/table1-fidelity.md says which one the paper preset takes and why."""

from __future__ import annotations

from dataclasses import dataclass

from subind.provenance import config_digest
from subind.registry import Registry

# Strategies of Table 1, the controls that ask whether the subnetwork itself matters, and the
# reference row (the pretrained model answering through the decision mapping).
PAPER_STRATEGIES = ("subtask-induction", "scratch", "data-mixture", "linear-ft")
DEFAULT_STRATEGIES = PAPER_STRATEGIES + ("random-subnetwork", "unmasked-only", "pretrained")
# The inputs a user gives for real data (the paper preset); the synthetic presets make their own.
REAL_DATA_FIELDS = ("imagenet_dir", "val_labels", "pooled", "cue_conflict_dir", "decision_mapping",
                    "weights_resnet18", "weights_vit", "allow_missing")  # fmt: skip
# Choices of the settings that name one (checked before a run starts).
CHOICES = {
    "selection": ("paper", "random"),
    "adapt_resnet": ("head", "full"),
    "adapt_vit": ("head", "full"),
    "adapt_images_resnet": ("discovery", "train"),
    "adapt_images_vit": ("discovery", "train"),
    "adapt_lr_schedule": ("constant", "linear"),
    "select_on": ("evaluation", "val"),
    "discovery_optimizer": ("adam", "adamw"),
    "discovery_augment": ("none", "train"),
    "beta_schedule": ("reaches-final", "per-epoch"),
    "mixture_recipe": ("released", "transfer"),
    "eval_set": ("paper", "released"),
    "transfer_transforms": ("released", "source"),
    "image_decoding": ("pil", "device"),
    "optimizer": ("sgd", "adamw"),
    "distributed": ("ddp", "slice"),
    "stack": ("none", "seeds", "strategies"),
}


@dataclass(frozen=True)
class Table1Config:
    # Inputs (paper preset): an ImageNet root (train/<wnid>/, val/), a pooled source (a folder
    # holding one meanpool build per subset: discovery/, evaluation/, val/; or
    # hf://datasets/ORG/NAME), Geirhos' cue-conflict folder and the two models' weights (a
    # torchvision state dict, a transformers checkpoint folder or hf://ORG/NAME in the cache).
    imagenet_dir: str | None = None
    val_labels: str | None = None
    pooled: str | None = None
    cue_conflict_dir: str | None = None
    weights_resnet18: str | None = None
    weights_vit: str | None = None
    decision_mapping: str | None = None  # None: the packaged ImageNet-1k -> 16-class mapping
    allow_missing: bool = False  # go on without listed images the ImageNet tree lacks (recorded)
    # "mini" / "tiny": generate the synthetic shape/texture world (benchmarks/vision/toyworld/)
    # under OUT/world and pretrain the mini models on it; the inputs above (and the image sets
    # below) are then the world's.
    world: str | None = None
    world_seed: int = 0
    models: tuple[str, ...] = ("resnet18", "vit_b_16")
    # Image sets: "paper": the paper's lists (13,929 discovery and 1,549 evaluation images;
    # training: the 213,555 listed minus the evaluation images); "random": a seeded class-balanced
    # draw of discovery_per_class / evaluation_per_class from every 16-class image.
    selection: str = "paper"
    discovery_per_class: int = 869
    evaluation_per_class: int = 96
    index_seed: int = 0
    # Stage 0 (mini only): pretraining epochs on the world's pretraining set.
    pretrain_epochs: int = 10
    pretrain_lr: float = 2e-3
    pretrain_batch_size: int = 128
    # Stage 2, adaptation to 16 classes (Table 2's original model, Table 1's "Linear FT" row):
    # "head" trains a new 16-way head on a frozen backbone (the paper's text), "full" the whole
    # model (the released code for ResNet18); on the originals of the discovery images
    # ("discovery": the released ViT recipe) or on every training image ("train": the released
    # ResNet recipe, resnet_16_class_adapt.py); transformers' Trainer defaults otherwise (AdamW,
    # weight decay 0, linear decay). The best epoch is chosen on select_on.
    adapt_resnet: str = "full"
    adapt_vit: str = "head"
    adapt_images_resnet: str = "train"
    adapt_images_vit: str = "discovery"
    adapt_optimizer: str = "adamw"
    adapt_lr_resnet: float = 1e-3
    adapt_lr_vit: float = 2e-3
    adapt_weight_decay: float = 0.0
    adapt_lr_schedule: str = "linear"  # "linear": decay to 0 over the epochs (Trainer's)
    adapt_epochs_resnet: int = 5
    adapt_epochs_vit: int = 5
    adapt_batch_size_resnet: int = 128
    adapt_batch_size_vit: int = 64
    # Where the adaptation (and the released data-mixture recipe) picks its best epoch:
    # "evaluation" (the 1,549 evaluation images, held out of training) or "val" (ImageNet val:
    # what the released code did, the very images Table 1 then reports on).
    select_on: str = "evaluation"
    # Stage 3, discovery (C.1): masks on every convolution (ResNet) / every Linear and the patch
    # embedding (ViT), beta_final 100, lambda in {1e-6, 1e-7, 1e-8}; the most accurate subnetwork
    # on pooled evaluation images, or the one of transfer_penalty.
    discovery_optimizer: str = "adamw"  # released: torch AdamW (weight decay 0.01); "adam"
    discovery_lr: float = 1e-3
    discovery_epochs_resnet: int = 100
    discovery_epochs_vit: int = 100  # the text's; the transferred subnetwork's (b32) config's
    discovery_batch_size_resnet: int = 32
    discovery_batch_size_vit: int = 32  # the text's; the transferred ViT subnetwork was "_b32"
    discovery_augment: str = "none"  # "none": the model's preprocessing only (released); "train"
    mask_classifier: bool = True  # ViT: the classifier Linear is masked too (released)
    mask_init: float = -0.1  # the mask scores' initial value (released: mask_init_value)
    penalties: tuple[float, ...] = (1e-6, 1e-7, 1e-8)
    beta_final: float = 100.0
    # "reaches-final": beta_final on the last epoch (the released schedule: 1, then
    # beta_final^((e + 1) / epochs)); "per-epoch": beta_final^(e / epochs) (ends one step short).
    beta_schedule: str = "reaches-final"
    transfer_penalty: float | None = 1e-8  # released; None: the most accurate (the text)
    random_init_control: bool = True  # Figure 11: discovery on a randomly initialised model
    # This project's gate (no counterpart in the released code): stop unless the subnetwork beats
    # the whole model on pooled images (Table 2). False: record it, warn in the log and
    # table2.md, and go on.
    require_subnetwork_gain: bool = False
    # Stage 4, strategies (C.1): SGD, momentum 0.9, weight decay 1e-4, lr 1e-3, batch 128
    # (ResNet18) / 512 (ViT), 33,160 steps.
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    unmasked: tuple[str, ...] = ("inherit", "reinit")
    subnetwork_trainable: bool = False
    seeds: tuple[int, ...] = (0,)
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size_resnet: int = 128
    batch_size_vit: int = 512
    steps: int = 33_160
    steps_vit: int | None = None  # the ViT's step budget (None: steps)
    # The ViT's scratch run (None: steps_vit); the released transfer_vit_2.yaml: 40 epochs at
    # batch 512, 16,600 steps.
    scratch_steps_vit: int | None = 16_600
    # Data mixture's recipe: "released" (from the pretrained model with a new head; AdamW lr
    # 1e-3, linear decay, batch 128, 5 epochs (ViT: 1), best epoch on select_on) or "transfer"
    # (from the adapted model, the strategies' SGD recipe and step budget).
    mixture_recipe: str = "released"
    # ViT transfers (subtask induction and its controls) freeze every LayerNorm and the class
    # token, as the released ViT transfer did (NeuroSurgeon's init_subnet_transfer).
    freeze_vit_norms: bool = True
    eval_every: int = 1_000  # Figure 5's curves: original and pooled evaluation-subset accuracy
    # The strategies' transforms: "released" (for every model, the ViT too: Resize(256) on
    # tensors, bilinear without antialiasing, then RandomCrop(224) + flip for training and
    # CenterCrop(224) for evaluation, ImageNet mean/std; stimuli Resize(224) + CenterCrop(224))
    # or "source" (each weight source's preprocessing and the crop of train_crop). Adaptation
    # and discovery always see the model's own preprocessing, as in the released code.
    transfer_transforms: str = "released"
    # With transfer_transforms=source, the training crop: "resize-crop" (the evaluation resize,
    # then RandomCrop + flip), or None for the architecture's own (RandomResizedCrop + flip;
    # mini: pad + flip).
    train_crop: str | None = "resize-crop"
    # Table 1's original and pooled columns, always on the same images: "paper" (the index's
    # validation images: the paper's 202 listed WNIDs, the pooled val build; accuracy over
    # images) or "released" (the validation images of the evaluation list's WNIDs, 151 in the
    # paper's; accuracy averaged over the 16 classes, as the released pooled_imnet_eval.py).
    eval_set: str = "paper"
    # Cross-entropy weighted by N / N_c per class, normalised (the released code: 16-class
    # ImageNet is unbalanced, dog holds half of it); False: plain cross-entropy.
    class_weighted_loss: bool = True
    # The cue-conflict scoring of table1.md's paired differences: "standard" (Geirhos et al.) or
    # "released" (the paper's code; docs/cue-conflict-scoring.md). Every record holds both, so
    # this changes reports only and is part of no cache key.
    cue_conflict_scoring: str = "standard"
    # Execution (not part of any cache key).
    device: str = "auto"
    amp: str | None = None  # "bf16": autocast on CUDA
    loader_workers: int = 4
    # The training images' JPEG decoding and transform: "pil" (the data loader's workers, on
    # the CPU) or "device" (torchvision.io.decode_jpeg on the run's device, nvJPEG on CUDA, then
    # the released transform as tensors there: benchmarks.vision.decode); "device" needs
    # transfer_transforms=released.
    image_decoding: str = "pil"
    eval_batch_size: int = 256
    # torchrun: "ddp" trains every run on all ranks together (global batch split over ranks);
    # "slice" gives each rank its own runs.
    distributed: str = "ddp"
    # With ddp on GPUs, BatchNorm statistics over the global batch (the paper trained one batch
    # of 128 on one device); False: each rank's share only.
    sync_batchnorm: bool = True
    dist_timeout_s: int = 12 * 3600  # the longest a collective waits (a rank may train for hours)
    # Local worker processes sharing the CPU cores (torchrun's ranks started by the run itself,
    # distributed=slice): stages and runs are dealt to them; 1: one process.
    workers: int = 1
    # The synthetic world's images decoded once and held as tensors, augmented a batch at a time
    # (benchmarks.vision.tensors; where its transforms allow); False: read and transformed one
    # image at a time, as the user's data is.
    tensor_images: bool = True
    # Runs trained together in one process, stacked with torch.func (subind.stacked: one
    # vmapped step for all; equal to one at a time up to float rounding): "seeds" (the seeds of
    # one model, strategy and unmasked mode), "strategies" (every run of one model that shares
    # the recipe, the training set and the trainable tensors: subtask induction and its
    # controls, both unmasked modes, every seed) or "none". For devices that small models leave
    # idle (a GPU); on 2 CPU cores a stacked step is slower (docs/speed.md). Needs
    # distributed=slice under torchrun.
    stack: str = "none"

    def digest(self, *names: str) -> str:
        return config_digest(self, *names)

    def per_family(self, name: str, family: str) -> int:
        """Setting ``name`` (e.g. "batch_size") of a recipe family ("resnet" or "vit": see
        ``benchmarks.vision.models.recipe_family``): its ``_resnet`` or ``_vit`` field."""
        assert family in ("resnet", "vit"), f"expected a recipe family, got {family!r}"
        return getattr(self, f"{name}_{family}")

    def batch_size(self, family: str) -> int:
        """The global training batch of a recipe family."""
        return self.per_family("batch_size", family)

    def train_steps(self, family: str) -> int:
        """The step budget of a recipe family's training runs."""
        return self.steps_vit if family == "vit" and self.steps_vit is not None else self.steps

    def adapt(self, family: str) -> str:
        """ "head" or "full": how a recipe family's model is adapted to 16 classes."""
        return self.per_family("adapt", family)

    def scratch_steps(self, family: str) -> int:
        """The step budget of a recipe family's scratch run."""
        if family == "vit" and self.scratch_steps_vit is not None:
            return self.scratch_steps_vit
        return self.train_steps(family)

    def weights(self, family: str) -> str | None:
        """The weights given for the paper's model of a family (``weights_resnet18`` /
        ``weights_vit``)."""
        return {"resnet": self.weights_resnet18, "vit": self.weights_vit}[family]


# The command-line option that gives the weights of each architecture family.
WEIGHTS_OPTION = {"resnet": "--weights-resnet18", "vit": "--weights-vit"}


# What may differ between runs into one output folder: which runs, and how they execute.
FOLDER_FREE = ("models", "strategies", "seeds", "unmasked", "device", "loader_workers",
               "eval_batch_size", "distributed", "sync_batchnorm", "dist_timeout_s",
               "cue_conflict_scoring", "workers", "image_decoding", "stack")  # fmt: skip


def config_from_dict(d: dict) -> Table1Config:
    """A :class:`Table1Config` from ``dataclasses.asdict`` of one read back from JSON (lists
    become the tuples the fields hold)."""
    fields = Table1Config.__dataclass_fields__
    return Table1Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()
                           if k in fields})  # fmt: skip


_INPUT_KEYS = ["imagenet_dir", "val_labels", "pooled", "world", "world_seed", "allow_missing"]
PRETRAIN_KEYS = _INPUT_KEYS + ["pretrain_epochs", "pretrain_lr", "pretrain_batch_size"]
ADAPT_KEYS = PRETRAIN_KEYS + [
    "weights_resnet18",
    "weights_vit",
    "selection",
    "discovery_per_class",
    "evaluation_per_class",
    "index_seed",
    "adapt_resnet",
    "adapt_vit",
    "adapt_images_resnet",
    "adapt_images_vit",
    "adapt_optimizer",
    "adapt_lr_resnet",
    "adapt_lr_vit",
    "adapt_weight_decay",
    "adapt_lr_schedule",
    "adapt_epochs_resnet",
    "adapt_epochs_vit",
    "adapt_batch_size_resnet",
    "adapt_batch_size_vit",
    "select_on",
    "train_crop",
    "tensor_images",
]
DISCOVERY_KEYS = ADAPT_KEYS + [
    "discovery_optimizer",
    "discovery_lr",
    "discovery_epochs_resnet",
    "discovery_epochs_vit",
    "discovery_batch_size_resnet",
    "discovery_batch_size_vit",
    "discovery_augment",
    "mask_classifier",
    "mask_init",
    "beta_final",
    "beta_schedule",
]
RUN_KEYS = DISCOVERY_KEYS + [
    "penalties",
    "transfer_penalty",
    "subnetwork_trainable",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "batch_size_resnet",
    "batch_size_vit",
    "steps",
    "steps_vit",
    "eval_every",
    "class_weighted_loss",
    "scratch_steps_vit",
    "mixture_recipe",
    "freeze_vit_norms",
    "transfer_transforms",
    "eval_set",
]

_PRESETS: dict[str, Table1Config] = {
    # The paper's settings (Section 5.2, Appendix C.1), with the released code's recipe where the
    # text does not say or the paper's numbers came from the code (docs/table1-fidelity.md).
    "paper": Table1Config(),
    # The whole experiment on a 2-core CPU in the synthetic world of benchmarks/vision/toyworld/:
    # 32 px images of 16 silhouette classes, small ResNet/ViT built from the same torchvision
    # classes, and everything scaled down (docs/toyworld.md).
    "mini": Table1Config(
        world="mini",
        models=("resnet18-mini", "vit_b_16-mini"),
        selection="random",
        pretrain_epochs=8,
        adapt_resnet="head",
        adapt_vit="head",
        adapt_images_resnet="train",
        adapt_images_vit="train",
        adapt_optimizer="sgd",
        adapt_lr_resnet=5e-2,
        adapt_lr_vit=5e-2,
        adapt_weight_decay=1e-4,
        adapt_lr_schedule="constant",
        adapt_epochs_resnet=1,
        adapt_epochs_vit=1,
        adapt_batch_size_resnet=64,
        adapt_batch_size_vit=64,
        discovery_optimizer="adam",
        discovery_lr=3e-2,
        discovery_epochs_resnet=50,
        discovery_epochs_vit=30,
        discovery_batch_size_resnet=64,
        discovery_batch_size_vit=64,
        discovery_augment="train",
        beta_schedule="per-epoch",
        mask_classifier=False,
        penalties=(1e-6, 1e-8),
        transfer_penalty=None,
        seeds=(0, 1, 2),
        lr=2e-2,
        batch_size_resnet=64,
        batch_size_vit=64,
        steps=300,
        steps_vit=500,
        scratch_steps_vit=None,
        mixture_recipe="transfer",
        freeze_vit_norms=False,
        eval_every=100,
        transfer_transforms="source",
        train_crop=None,
        class_weighted_loss=False,
        loader_workers=0,
        distributed="slice",
        workers=2,
    ),
    # Seconds: for tests and smoke checks only (a few images per class, a few steps).
    "tiny": Table1Config(
        world="tiny",
        models=("resnet18-mini", "vit_b_16-mini"),
        selection="random",
        pretrain_epochs=1,
        pretrain_batch_size=32,
        adapt_resnet="full",
        adapt_vit="head",
        adapt_images_resnet="discovery",
        adapt_lr_resnet=2e-3,
        adapt_epochs_resnet=1,
        adapt_epochs_vit=1,
        adapt_batch_size_resnet=16,
        adapt_batch_size_vit=16,
        discovery_epochs_resnet=2,
        discovery_epochs_vit=2,
        discovery_batch_size_resnet=16,
        discovery_batch_size_vit=16,
        beta_schedule="per-epoch",
        penalties=(1e-6, 1e-8),
        transfer_penalty=None,
        require_subnetwork_gain=False,
        seeds=(0,),
        batch_size_resnet=16,
        batch_size_vit=16,
        steps=4,
        scratch_steps_vit=None,
        mixture_recipe="transfer",
        freeze_vit_norms=False,
        eval_every=2,
        transfer_transforms="source",
        train_crop=None,
        loader_workers=0,
        eval_batch_size=64,
        distributed="slice",
    ),
}

PRESETS: Registry[Table1Config] = Registry("table1 preset")
for _name, _cfg in _PRESETS.items():
    PRESETS.register(_name, "")(_cfg)
