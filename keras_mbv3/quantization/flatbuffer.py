"""The one pass over a converted ``.tflite`` flatbuffer: signature, detection outputs, stripped names, metadata."""

from keras_mbv3.quantization.metadata import append_files, with_metadata
from keras_mbv3.quantization.postprocess import finish_detection

SIGNATURE_KEY = "serving_default"


def finish(content, input_names, strip_names, metadata=None, postprocess=None):
    """Give ``.tflite`` bytes a ``serving_default`` signature if they have none; optionally strip inner names
    and add ``metadata`` (one pass over the flatbuffer). With a ``postprocess``, its outputs in its port
    order (``postprocess.finish_detection``) named as TFLite detection apps read them.

    The signature is what ``TFLiteConverter.from_keras_model`` writes (inputs
    named after the Keras ``Input`` layers, outputs ``output_0``, ...), so that
    ``Interpreter.get_signature_runner()`` works on our faster traced export too.
    ``strip_names`` drops the names of inner tensors: the converter names each
    after every op fused into it (``model/block/Conv2D;model/block/BiasAdd;...``),
    33 KB of a 32x32 MobileNetV3Small int8 file. Inputs, outputs and signatures
    keep theirs (``flatbuffer_utils.strip_strings`` drops those too). Input and
    output tensors are named as in the signature: the converter names them after
    the ops fused into them, which for a tfmot QAT model hold its layer counters
    (``model_5/quantize_layer_7/...``): two exports of one model differed.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    (subgraph,) = model.subgraphs
    output_names = [f"output_{i}" for i in range(len(subgraph.outputs))]
    if postprocess is not None:
        output_names = finish_detection(model, postprocess)
        model.signatureDefs = []  # the converter's names the outputs in its own order
    if not model.signatureDefs:
        signature = schema.SignatureDefT()
        signature.signatureKey, signature.subgraphIndex = SIGNATURE_KEY, 0
        signature.inputs = [_tensor_map(name, index) for name, index in zip(input_names, subgraph.inputs)]
        signature.outputs = [_tensor_map(name, index) for name, index in zip(output_names, subgraph.outputs)]
        model.signatureDefs = [signature]
    for tensor_map in model.signatureDefs[0].inputs + model.signatureDefs[0].outputs:
        subgraph.tensors[tensor_map.tensorIndex].name = tensor_map.name
    if strip_names:
        named = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in named:
                tensor.name = None
    files = with_metadata(model, metadata) if metadata is not None else {}
    content = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return append_files(content, files) if files else content


def _tensor_map(name, index):
    from tensorflow.lite.python import schema_py_generated as schema

    tensor_map = schema.TensorMapT()
    tensor_map.name, tensor_map.tensorIndex = name, index
    return tensor_map


