"""The examples in the runtime's docstrings run, with the shipped model."""

from __future__ import annotations

import doctest

import convention_rt.classifier


def test_classifier_module_examples():
    failures, tried = doctest.testmod(convention_rt.classifier, optionflags=doctest.ELLIPSIS, verbose=False)
    assert tried >= 10
    assert failures == 0
