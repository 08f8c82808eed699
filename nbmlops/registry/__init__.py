"""The registry: MLflow's models, versions and aliases; a version loaded as a model."""
