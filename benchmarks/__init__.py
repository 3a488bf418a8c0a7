"""credaudit's benchmark: detection quality, noise estimation and cost, against cleanlab."""
