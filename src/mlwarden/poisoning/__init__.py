"""Training data: poisoning and backdoor detection, dataset hygiene, sensitive data.

Public entry points: :func:`data_report` (``mlwarden data``) and
:func:`backdoor_report` (``mlwarden backdoor``); the building blocks live in
:mod:`~mlwarden.poisoning.simulate` (attacks), :mod:`~mlwarden.poisoning.detect_data`,
:mod:`~mlwarden.poisoning.detect_model`, :mod:`~mlwarden.poisoning.mitigate` and
:mod:`~mlwarden.poisoning.pii`.
"""

from mlwarden.poisoning.assess import backdoor_report, data_report

__all__ = ["backdoor_report", "data_report"]
