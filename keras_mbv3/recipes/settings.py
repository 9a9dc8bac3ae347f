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
    "image_size": (None, "input side in pixels, at least 32 (to train: a multiple of 16 for segmentation, 32 for detection)"),
    "batch_size": (64, "images per training step"),
    "seed": (0, "seed of the data split, shuffling, augmentation and initial weights"),
    "model": ("small", "small, large, small-minimalistic or large-minimalistic"),
    "alpha": (1.0, "width multiplier"),
    "weights": (None, "initial backbone weights: imagenet, a weights file or a .keras model (its layers matched by name; default: from scratch)"),
    "min_stride": (None, "detection: the first map's stride, 16 (SSDLite's C4 and C5) or 8 (C3 too, with anchors "
                   "from 0.1 of the side, for small objects)"),
    "epochs": (None, "float training epochs"),  # None: by the data set's size, at train (LENGTH_RULE)
    "qat_epochs": (3, "QAT fine-tuning epochs"),
}
DEFAULTS = {name: default for name, (default, _) in SETTINGS.items()}
TYPES = {name: str if default is None else type(default) for name, default in DEFAULTS.items()} | {
    "image_size": int, "epochs": int, "min_stride": int}
TASK_DEFAULTS = {  # the settings whose default depends on --task; None: by the data
    "classification": {"data": "digits", "image_size": 32},
    "segmentation": {"data": "digits-seg", "image_size": 32},
    "detection": {"data": "digits-det", "image_size": 96, "min_stride": None},  # 32 px: SSDLite maps of 2x2 and 1x1
}
# the default length of float training (epochs None), every task: epochs, within these steps (tasks.Task.default_epochs)
LENGTH_EPOCHS, LENGTH_STEPS = 100, (3000, 50000)
LENGTH_RULE = (f"{LENGTH_EPOCHS} epochs, at least {LENGTH_STEPS[0]:,} and at most {LENGTH_STEPS[1]:,} training "
               "steps")
SMALL_OBJECTS_RULE = ("8 where the training boxes' median side is under 0.2 of the image's (stride 16's smallest "
                      "anchor), else 16")  # min_stride None: by the data (tasks.Detection.options_by_data)
# mbv3 adapt's options (its own flags, kept in the run's adapt/search.json rather than settings.json)
ADAPT_DEFAULTS = {"step_fraction": 0.05, "proposal_steps": 20, "finetune_epochs": 3, "threads": 1,
                  "max_iterations": None, "time_budget": None, "max_accuracy_drop": 0.01}
EMBEDDED = {task: defaults["data"] for task, defaults in TASK_DEFAULTS.items()}  # each task's embedded data set


def flag(name):
    return "--" + name.replace("_", "-")


def help_text(name):
    default, text = SETTINGS[name]
    if name == "data":
        return text + "; default: the run's, else the task's embedded set"
    if name == "image_size":
        by_task = ", ".join(f"{d['image_size']} for {task}" for task, d in TASK_DEFAULTS.items())
        return f"{text} (default: the run's, else {by_task})"
    if name == "min_stride":
        return f"{text} (default: the run's, else a Keras file's own, else by the data: {SMALL_OBJECTS_RULE})"
    if name == "epochs":
        return f"{text} (default: the run's, else by the data set's size: {LENGTH_RULE})"
    if default is None:
        return text
    return f"{text} (default: the run's, else {default})"
