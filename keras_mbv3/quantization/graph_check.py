"""The int8 graph check: fully int8 and one XNNPACK partition, or an ``Int8GraphError`` that says why."""

import warnings

from keras_mbv3.quantization.litert import graph_report


def _boundary_conversions(report):
    """QUANTIZE ops that uint8 or float32 I/O of an int8 model needs: one per such input, one per uint8 output."""
    io_types = report["io_types"]
    return sum(t != "int8" for t in io_types["inputs"]) + sum(t == "uint8" for t in io_types["outputs"])


class Int8GraphError(RuntimeError):
    """An int8 export that is not fully int8, or not one XNNPACK partition."""


def check_int8_graph(content, on_split="raise", float_tail=()):
    """Check that int8 ``.tflite`` bytes are fully int8 and run as one XNNPACK partition.

    A tensor that no fake quantizer covered stays float in the converter, with
    no error (a DEQUANTIZE ... QUANTIZE island); an op that XNNPACK rejects in
    int8 (a scale ratio out of its limits, an op it lacks) runs in the slow
    builtin kernel and splits the graph. The QUANTIZE/DEQUANTIZE of uint8 or
    float I/O (outside XNNPACK, around the partition), and an undelegated last
    op that does not split the graph, are allowed; any other QUANTIZE is not.
    ``float_tail``: op names allowed in float after the int8 network (a
    detection export's float softmax and post-process).

    Raises:
        Int8GraphError: float ops or custom (Flex) ops inside; more than one
            partition when ``on_split`` is ``"raise"`` (``"warn"``: a warning).
    """
    try:
        report = graph_report(content)
    except (RuntimeError, ValueError) as error:  # an op LiteRT cannot run (a Flex op without its delegate)
        raise Int8GraphError(f"LiteRT cannot run the int8 export: {error}") from error
    custom = {op for op in report["ops"] if (op.startswith("Flex") or op == "CUSTOM") and op not in float_tail}
    float_ops = {op: n for op, n in report["float_ops"].items() if op not in float_tail}
    if float_ops or custom:
        raise Int8GraphError(
            f"the int8 export is not fully int8: float ops {float_ops}, custom ops {sorted(custom)} "
            "(a tensor without a quantization range; quantize the model with keras_mbv3.quantization.quantize_model)"
        )
    boundary = _boundary_conversions(report)
    inner = report["ops"].get("QUANTIZE", 0) - boundary
    if inner > 0:
        raise Int8GraphError(f"the int8 export requantizes inside the graph: {inner} QUANTIZE ops beyond the "
                             f"{boundary} of its uint8/float I/O (ranges that disagree between connected tensors)")  # fmt: skip
    if report["partitions"] != 1:
        message = (
            f"the int8 export runs as {report['partitions']} XNNPACK partitions, not 1: ops left to the slow "
            f"builtin kernels {report['undelegated']} (keras_mbv3.quantization.quantize_model gives one partition; "
            "pass check_graph='warn' to export anyway)"
        )
        if on_split == "raise":
            raise Int8GraphError(message)
        warnings.warn(message, stacklevel=3)


