"""The recipe's settings in one place: names, defaults and help (``Run``'s keywords, the CLI's flags).

Light on purpose (no TensorFlow import): ``mbv3 --help`` reads it.
"""

DATA_FORMS = ("digits (embedded, the default), digits-seg or digits-det (embedded, for --task segmentation or "
              "detection), a folder (train/ and val/ with one sub-folder of PNG/JPEG images per class; "
              "images/ and masks/ for segmentation; train/ and val/ with images and a COCO annotations.json "
              "for detection) or tfds:NAME (TensorFlow Datasets in --data-dir)")  # fmt: skip

# name: (default, help). A run folder's settings.json overrides the default; a flag given overrides both.
SETTINGS = {
    "data": (None, DATA_FORMS),
    "task": ("classification", "classification, segmentation (LR-ASPP) or detection (SSDLite)"),
    "data_dir": (None, "TensorFlow Datasets folder for tfds:NAME"),
    "image_size": (32, "input side in pixels, at least 32"),
    "batch_size": (64, "images per training step"),
    "seed": (0, "seed of the data split, shuffling, augmentation and initial weights"),
    "model": ("small", "small, large, small-minimalistic or large-minimalistic"),
    "alpha": (1.0, "width multiplier"),
    "weights": (None, "initial backbone weights: imagenet or a weights file (default: from scratch)"),
    "epochs": (20, "float training epochs"),
    "qat_epochs": (3, "QAT fine-tuning epochs"),
}
DEFAULTS = {name: default for name, (default, _) in SETTINGS.items()}
EMBEDDED = {"classification": "digits", "segmentation": "digits-seg", "detection": "digits-det"}  # each task's --data


def flag(name):
    return "--" + name.replace("_", "-")


def help_text(name):
    default, text = SETTINGS[name]
    if name == "data":
        return text + "; default: the run's, else the task's embedded set"
    if default is None:
        return text
    return f"{text} (default: the run's, else {default})"
