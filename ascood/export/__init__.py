"""From a trained run to a detector in production: a calibrated bundle, its model card, ONNX.

    threshold.py  the operating point: a threshold calibrated on ID validation scores (pure)
    state.py      a fitted scorer as tensors + JSON, and back (no pickle)
    bundle.py     the bundle directory: manifest schema, writing (temp dir, rename) and reading
    images.py     image files, folders and lists → uint8 batches at the bundle's decode size
    pick.py       which run of a sweep output to export (the report's pick, else the best final run)
    build.py      a run directory → the bundle's contents (fit, calibrate, measure on test)
    card.py       MODEL_CARD.md from the manifest
    onnx.py       network + scorer as one ONNX graph, for scorers that are a function of one forward pass

`ascood.detector.Detector` loads a bundle; `ascood-export` and `ascood-score` are the commands.
"""
