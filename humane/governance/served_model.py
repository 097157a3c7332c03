"""The pyfunc's definition file, logged as code ("models from code"): MLflow runs this file to build the model."""

from mlflow.models import set_model

from humane.governance.serving import HumaneModel

set_model(HumaneModel())
