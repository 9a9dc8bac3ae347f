"""Running ``.tflite`` models on LiteRT: inference, graph reports and latency."""

import collections
import statistics
import time

import numpy as np

DELEGATE = "DELEGATE"


def interpreter(model_content, num_threads=1, disable_delegate_fusion=False, xnnpack=True, keep_tensors=False):
    """An allocated ``ai_edge_litert`` interpreter (XNNPACK on unless ``xnnpack=False``) for ``model_content`` bytes;
    ``keep_tensors``: every intermediate tensor stays readable after ``invoke`` (with ``xnnpack=False``: a delegated
    partition hides its inner tensors)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    runner = Interpreter(
        model_content=model_content,
        num_threads=num_threads,
        experimental_disable_delegate_node_fusion=disable_delegate_fusion,
        experimental_op_resolver_type=resolver,
        experimental_preserve_all_tensors=keep_tensors,
    )
    runner.allocate_tensors()
    return runner


def _quantize(x, detail):
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def _dequantize(y, detail):
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        return (y.astype(np.float32) - zero_point) * scale
    return y


def predict(runner, images):
    """Float outputs of a one-input, one-output model for a batch of float ``images``, one at a time.

    Integer inputs and outputs are (de)quantized with the model's own scales.
    """
    (output,) = predict_outputs(runner, images)
    return output


def predict_outputs(runner, images):
    """``[outputs (N, ...)]``, one float array per output in the model's order, of a one-input model on ``images``."""
    (input_detail,), output_details = runner.get_input_details(), runner.get_output_details()
    outputs = [[] for _ in output_details]
    for image in images:
        runner.set_tensor(input_detail["index"], _quantize(np.asarray(image)[None], input_detail))
        runner.invoke()
        for collected, detail in zip(outputs, output_details):
            collected.append(_dequantize(runner.get_tensor(detail["index"]), detail)[0])
    return [np.stack(collected) for collected in outputs]


def graph_report(model_content):
    """What XNNPACK makes of a model: op counts, partitions and the ops it did not take.

    Returns:
        dict with ``ops`` (op name -> count in the model), ``partitions`` (number of
        XNNPACK delegate nodes when fused, as run), ``undelegated`` (op name ->
        count of ops left to the builtin kernels) and ``float_ops`` (op name ->
        count of ops that read or write a float tensor, the float I/O's
        ``QUANTIZE``/``DEQUANTIZE`` left out: in an int8 model, float islands)
        and ``io_types`` (``{"inputs": [dtype name], "outputs": [...]}``).
    """
    fused = interpreter(model_content)._get_ops_details()
    ops = collections.Counter(op["op_name"] for op in fused if op["op_name"] != DELEGATE)
    partitions = sum(op["op_name"] == DELEGATE for op in fused)
    # With fusion disabled each delegated op gets a DELEGATE node of its own that
    # produces that op's outputs; the ops whose outputs no DELEGATE produces stay undelegated.
    single = interpreter(model_content, disable_delegate_fusion=True)._get_ops_details()
    delegated_outputs = {t for op in single if op["op_name"] == DELEGATE for t in op["outputs"]}
    undelegated = collections.Counter(
        op["op_name"] for op in single if op["op_name"] != DELEGATE and not set(op["outputs"]) <= delegated_outputs
    )
    plain = interpreter(model_content, xnnpack=False)
    floats = {d["index"] for d in plain.get_tensor_details() if np.issubdtype(d["dtype"], np.floating)}
    float_ops = collections.Counter(
        op["op_name"] for op in plain._get_ops_details()
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") and floats & (set(op["inputs"]) | set(op["outputs"]))
    )  # fmt: skip
    io_types = {kind: [np.dtype(d["dtype"]).name for d in details]
                for kind, details in (("inputs", plain.get_input_details()), ("outputs", plain.get_output_details()))}  # fmt: skip
    return {"ops": dict(ops), "partitions": partitions, "undelegated": dict(undelegated), "float_ops": dict(float_ops),
            "io_types": io_types}  # fmt: skip


def interleaved_latency_ms(models, rounds=15, runs=10, warmup=5, num_threads=1, progress=None):
    """Median single-image latency of each model, measured round-robin so that drift hits all alike.

    Args:
        models: ``{name: tflite bytes}``.
        rounds: rounds; in each, every model runs ``runs`` times in a row.
        runs: invocations per model and round (the round's mean is one sample).
        warmup: untimed invocations per model first.
        num_threads: LiteRT threads.
        progress: optional callable called once per round (e.g. a progress bar update).

    Returns:
        ``{name: median milliseconds per invocation}``.
    """
    samples = interleaved_samples(models, rounds, runs, warmup, num_threads, progress)
    return {name: statistics.median(values) for name, values in samples.items()}


def interleaved_samples(models, rounds=15, runs=10, warmup=5, num_threads=1, progress=None, until=None,
                        max_rounds=None):  # fmt: skip
    """``{name: [ms per invocation, one per round]}`` of ``interleaved_latency_ms``'s rounds; after ``rounds``,
    rounds go on one at a time until ``until(samples)`` is true or ``max_rounds`` were run (None: no more)."""
    runners = {}
    for name, content in models.items():
        runner = interpreter(content, num_threads)
        detail = runner.get_input_details()[0]
        runner.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        for _ in range(warmup):
            runner.invoke()
        runners[name] = runner
    samples = {name: [] for name in models}
    done = 0
    while done < rounds or (until is not None and done < (max_rounds or rounds) and not until(samples)):
        for name, runner in runners.items():
            start = time.perf_counter()
            for _ in range(runs):
                runner.invoke()
            samples[name].append((time.perf_counter() - start) * 1000 / runs)
        done += 1
        if progress:
            progress()
    return samples
