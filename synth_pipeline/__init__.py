"""synth-pipeline: privacy-safe synthetic releases of time-series and panel tables.

Stages, top-down: ingest -> schema -> validate -> split -> encoding -> models -> synthesizer.
"""

__version__ = "0.1.0"
