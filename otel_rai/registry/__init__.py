"""Registry: which registered version a model loaded from a model registry is (MLflow's). `mlflow` turns
``models:/`` and ``runs:/`` URIs and model directories into a name, version and alias with MLflow's own
client, importing nothing of otel-rai (so the command line may use it); `hooks` wraps MLflow's model
loaders while instrumented and registers what they load. Imports `capture` and the foundation modules.
"""
