"""One thin module per dvc.yaml stage: read the inputs, call the library (`humane`), write the outputs.

Each module's `run(params, paths, ctx)` is the stage's one implementation: `python -m tasks.<stage>` (what
dvc.yaml runs) and the Prefect flow both call it. Stage modules never import each other.
"""
