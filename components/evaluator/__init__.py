"""Evaluator: the promotion gate. Blesses at most one candidate that passes every rule.

Import the component as ``from components.evaluator.component import Evaluator`` (named like the
standard TFX Evaluator: import one of them under another name where both are used).
"""
