"""The compute filter scheduler: filters and weighers over host states, then a choice.

``select_destinations`` (``selection.py``) is the entry point; ``state.py`` holds what
the scheduler knows about a host and about the request; filters live one per module in
``filters/``, weighers in ``weighers.py``.
"""
