"""ML stage: customer segments, purchase/churn propensity and CLV, written back to the `ml` schema.

Entry point: `touchpoint.ml.stage.run_ml(ctx, con)`; gate data: `touchpoint.ml.checks.ml_output_checks`.
Nothing heavy is imported here, so importing the package (e.g. from a DAG file) stays cheap.
"""
