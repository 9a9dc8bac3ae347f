"""Detection on a user's small data set (issue 24): a learning-curve table on a COCO-format folder.

    python benchmarks/detection_small_data.py WORK [--scales 0.15 0.45] [--size 160] [--train 800] [--val 150]
        [--run NAME "FLAGS" ...]

writes WORK/data (once): digits canvases of ``--size`` px, 1-3 digits of ``--scales`` of the side, as a
COCO-format folder (train/ and val/, PNGs and annotations.json), the kind of folder a user brings. Then each
``--run NAME "FLAGS"`` is ``mbv3 recipe --task detection --data WORK/data --out WORK/NAME FLAGS`` in its own
process, one after another (``benchmarks/training_length.py``), and the table gives its image size and min stride,
training steps, float and int8 mAP@.5 and mAP (COCO, the validation split) and its whole time. A finished run
folder is read, not run again.
"""

import argparse
import os

import training_length  # benchmarks/: the runs and their table


def write_folder(path, size, scales, train, val, seed):
    from keras_mbv3.recipes import data, detection_data

    arrays = detection_data.digits_detection(size, train, val, seed=seed, scales=tuple(scales))
    detection_data.write_coco_folder(path, *arrays, data.DIGIT_NAMES)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--scales", type=float, nargs=2, default=(0.15, 0.45))
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", nargs=2, action="append", default=[], metavar=("NAME", "FLAGS"))
    args = parser.parse_args()
    data = os.path.join(os.path.abspath(args.work), "data")
    if not os.path.exists(data):
        write_folder(data, args.size, args.scales, args.train, args.val, args.seed)
    training_length.table("detection", data, args.run, os.path.abspath(args.work))


if __name__ == "__main__":
    main()
