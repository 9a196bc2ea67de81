"""Defences: input restoration, output hardening, robust training, and defended targets.

Modules: :mod:`~mlwarden.defenses.transforms` (input restoration chain),
:mod:`~mlwarden.defenses.defended` (``DefendedTarget`` with BPDA/EOT for adaptive
attacks), :mod:`~mlwarden.defenses.adversarial_training` (PGD adversarial training),
``output`` (output hardening) and ``dp`` (DP-SGD training). Import the module you need;
this package imports nothing heavy on its own.
"""
