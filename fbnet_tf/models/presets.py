"""Presets: plain dicts of model sizes and of named experiments (imports no TensorFlow).

Model presets give the VGG-FACE size (`image_size`, `width` on the 64..512 filters, `fc_units`). Experiments are
partial configs (see `fbnet_tf.config`): the paper's Table 2 rows (coupling x relatedness), the three single-task
VGG-FACE baselines, and the CPU demo.
"""
from fbnet_tf.models.baselines import SINGLE_TASK_EXPERIMENTS

MODEL_PRESETS = {
    "paper": {
        "description": "FaceBehaviorNet as published: 96x96 input, VGG-FACE full width (64..512), FC 4096 x 2; "
                       "50.5 M parameters, ~10 img/s training on a 2-core CPU.",
        "config": {"image_size": 96, "width": 1.0, "fc_units": 4096, "dropout": 0.5},
    },
    "small": {
        "description": "Demo size: 64x64 input, 1/8 width (8..64 filters), FC 256; trains in minutes on a CPU.",
        "config": {"image_size": 64, "width": 0.125, "fc_units": 256, "dropout": 0.5},
    },
    "tiny": {
        "description": "Unit tests: 32x32 input, 1/32 width (2..16 filters), FC 16.",
        "config": {"image_size": 32, "width": 1 / 32, "fc_units": 16, "dropout": 0.5},
    },
}

# FATAUVA-Net sizes (fbnet_tf/models/fatauvanet.py documents the structure and why 96 px).
MODEL_PRESETS.update({
    "fatauva_paper": {
        "description": "FATAUVA-Net, mrPoly-Net: 96x96 input, core widths 32/64/128, FC 128 per label.",
        "config": {"family": "fatauvanet", "image_size": 96, "fc_units": 128, "fatauva": {"filters": 32}},
    },
    "fatauva_small": {
        "description": "FATAUVA-Net demo size: 48x48 input, core widths 8/16/32, FC 32.",
        "config": {"family": "fatauvanet", "image_size": 48, "fc_units": 32, "fatauva": {"filters": 8}},
    },
    "fatauva_tiny": {
        "description": "FATAUVA-Net for unit tests: 32x32 input, core widths 2/4/8, FC 8.",
        "config": {"family": "fatauvanet", "image_size": 32, "fc_units": 8, "fatauva": {"filters": 2}},
    },
})

# Table 2 of the paper: FaceBehaviorNet without coupling and with each coupling, under each relatedness table.
_COUPLINGS = {
    "no_coupling": "none",
    "coannotation": "coannotation",
    "soft_coannotation": "soft_coannotation",
    "distr_matching": "distribution_matching",
    "soft_coannotation_distr_matching": "soft_coannotation+distribution_matching",
}
_RELATEDNESS = ("du2014", "affwild2")

EXPERIMENTS: dict[str, dict] = {}
for _name, _coupling in _COUPLINGS.items():
    for _table in _RELATEDNESS:
        EXPERIMENTS[f"{_name}_{_table}"] = {"loss": {"coupling": _coupling, "relatedness": _table}}
    # The bare name uses the cognitive-study table (the paper's Table 1), as the paper's main results do.
    EXPERIMENTS[_name] = {"loss": {"coupling": _coupling, "relatedness": "du2014"}}

EXPERIMENTS.update(SINGLE_TASK_EXPERIMENTS)

# FATAUVA-Net (Chang et al. 2017) trained in its three stages, and the two variants its Figures 9-10 compare.
# Record dirs per stage: data.stage_record_dirs.{attribute: [celeba], au: [bp4d, semaine], va: [affwild]}.
_FATAUVA_DATA = {"batch_size": 64, "rebalance": {"au": True, "va": True}}
EXPERIMENTS["fatauvanet"] = {"model": {"preset": "fatauva_paper", "fatauva": {"va_head": "regression"}},
                             "data": _FATAUVA_DATA, "trainer": {"epochs": 20, "learning_rate": 1e-3}}
EXPERIMENTS["fatauvanet_cls"] = {"model": {"preset": "fatauva_paper", "fatauva": {"va_head": "class"}},
                                 "data": _FATAUVA_DATA, "trainer": {"epochs": 20, "learning_rate": 1e-3}}
# The CPU demo of the three stages (`python -m fbnet_tf.train --experiment fatauvanet_demo --run-dir X`): renders
# the demo world's CelebA-, BP4D-, SEMAINE- and Aff-Wild-style releases into demo_data/ where missing, builds them
# with the real builders, and trains the small preset. Variants: model.fatauva.va_head=class, model.fatauva.fatva=true.
EXPERIMENTS["fatauvanet_demo"] = {
    "model": {"preset": "fatauva_small", "fatauva": {"va_head": "regression"}},
    "data": {"batch_size": 64, "validation_batch_size": 128, "rebalance": {"au": True, "va": True},
             "demo_world": "demo_data", "demo_releases": ["celeba", "bp4d", "semaine", "affwild"],
             "stage_record_dirs": {"attribute": ["demo_data/records/celeba"],
                                   "au": ["demo_data/records/bp4d", "demo_data/records/semaine"],
                                   "va": ["demo_data/records/affwild"]}},
    "trainer": {"epochs": 20, "learning_rate": 1e-3},
}
EXPERIMENTS["fatva"] = {"model": {"preset": "fatauva_paper", "fatauva": {"va_head": "class", "fatva": True}},
                        "data": _FATAUVA_DATA, "trainer": {"epochs": 20, "learning_rate": 1e-3}}

# The CPU demo (`python -m fbnet_tf.train` with no arguments): the demo world's four FaceBehaviorNet releases
# (rendered and built into demo_data/ where missing), the small preset and the full method, trained from scratch. The paper's 1e-4 and coupling weight 1 assume VGG-FACE-initialised convs; from scratch the distribution
# matching term (a sum over 17 AUs) first pulls every face to "neutral, no AU", which satisfies it trivially, and
# 1e-4 leaves the net there for most of the run. Measured on the `small` demo world, 12 epochs of 52 steps
# (~0.25 s a step on a busy 2-core CPU): coupling 0.1 + Adam 1e-3 reaches validation CCC 0.84 (V) / 0.60 (A),
# expression accuracy 0.71, AU F1 0.33; Adam 3e-4 only starts learning after epoch 9 (CCC 0.21 / 0.28).
EXPERIMENTS["demo"] = {
    "model": {"preset": "small"},
    "loss": {"coupling": "soft_coannotation+distribution_matching", "relatedness": "du2014",
             "coupling_weight": 0.1},
    "data": {"batch_size": 96, "validation_batch_size": 128,
             "demo_world": "demo_data", "demo_releases": ["affectnet", "affwild2", "disfa", "rafdb"],
             "record_dirs": [f"demo_data/records/{name}" for name in ("affectnet", "affwild2", "disfa", "rafdb",
                                                                      "rafdb_compound")]},
    "trainer": {"epochs": 12, "learning_rate": 1e-3},
}
