"""ML stage: customer segments, purchase/churn propensity and CLV, written back to the `ml` schema.

Entry point: `touchpoint.ml.stage.run_ml(ctx, con)`. Its outputs are gated by the ML suite,
`expectations/suites/ml.py`, like every other layer.
Nothing heavy is imported here, so importing the package (e.g. from a DAG file) stays cheap.
"""
