"""Parameters and MAdds of the MobileNetV3 variants at 224x224, computed from the models.

Writes ``benchmarks/results/variants.md`` (the README's table).
"""

from common import markdown_table, write_result

from keras_mbv3.applications import MobileNetV3Large, MobileNetV3Small
from keras_mbv3.applications.complexity import count_madds

VARIANTS = [(fn, alpha, minimalistic) for fn in (MobileNetV3Large, MobileNetV3Small)
            for alpha, minimalistic in ((1.0, False), (0.75, False), (1.0, True))]  # fmt: skip


def main():
    rows = []
    for fn, alpha, minimalistic in VARIANTS:
        model = fn(weights=None, alpha=alpha, minimalistic=minimalistic, input_shape=(224, 224, 3))
        rows.append([fn.__name__, alpha, minimalistic, f"{model.count_params():,}", f"{count_madds(model) / 1e6:.0f}M"])
    table = markdown_table(["model", "alpha", "minimalistic", "params", "MAdds"], rows)
    print(table)
    print("written to", write_result("variants.md", "MobileNetV3 variants at 224x224", table))


if __name__ == "__main__":
    main()
