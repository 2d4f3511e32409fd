"""Helpers the tests share: configs, commands, test estimators, an MLflow server, fault and learned fixtures' helpers."""
