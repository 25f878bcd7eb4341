"""Shared test setup: quiet TensorFlow, deterministic seeds, a scratch directory per test."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
