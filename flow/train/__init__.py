"""The training wing: data (WIDER FACE or the built-in set) -> augment -> anchors -> loss -> the loop -> evaluate.
`loop.py` reads top to bottom: data, model, optimiser, epochs, checkpoints; it ends by exporting the run."""
